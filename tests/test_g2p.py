"""kdtools.applications.g2p: the CMU dictionary's splits, encoding, the encoder-decoder, greedy and beam decoding,
error rates and training with word-level KD."""
import pytest
import torch

from kdtools.applications import g2p


def test_lexicon_is_stress_free_and_keeps_every_distinct_pronunciation():
    lexicon = g2p.load_lexicon()
    assert len(lexicon) > 100_000
    assert lexicon["either"] == (("IY", "DH", "ER"), ("AY", "DH", "ER"))
    assert all(p in g2p.PHONEMES for prons in list(lexicon.values())[:2000] for pron in prons for p in pron)
    assert len(g2p.PHONEMES) == 39 and "x" not in "".join(w for w in list(lexicon)[:10] if not w.isalpha())


def test_splits_are_disjoint_deterministic_and_nested():
    train, valid, test = (set(g2p.split_words(s)) for s in ("train", "valid", "test"))
    assert not (train & valid or train & test or valid & test)
    assert len(train) + len(valid) + len(test) == len(g2p.load_lexicon())
    assert 0.78 < len(train) / len(g2p.load_lexicon()) < 0.82
    assert g2p.split_words("test", 50) == g2p.split_words("test", 100)[:50]
    with pytest.raises(ValueError, match="split must be one of"):
        g2p.split_words("dev")
    with pytest.raises(ValueError, match="n must be a positive int"):
        g2p.split_words("train", 0)


def test_encoding_pads_and_marks_the_ends():
    letters, lengths = g2p.encode_words(["ab", "cab"])
    assert letters.tolist() == [[1, 2, 0], [3, 1, 2]] and lengths.tolist() == [2, 3]
    phonemes = g2p.encode_phonemes([("K", "AE", "B"), ("AE",)])
    assert phonemes[0, 0] == g2p.BOS and phonemes[0, 4] == g2p.EOS and phonemes[1, 2] == g2p.EOS
    assert phonemes[1, 3:].eq(g2p.PAD).all()
    assert g2p.decode_ids(phonemes[0, 1:]) == ("K", "AE", "B")
    with pytest.raises(ValueError, match="words must be 2-12 lowercase letters"):
        g2p.encode_words(["Cab"])
    with pytest.raises(ValueError, match="stress-free ARPAbet"):
        g2p.encode_phonemes([("AH0",)])


def test_error_rates_by_hand():
    refs = [(("K", "AE", "T"),), (("T", "AH", "M", "EY", "T", "OW"), ("T", "AH", "M", "AA", "T", "OW"))]
    # word 1: one substitution in 3; word 2: matches its second pronunciation exactly
    rates = g2p.error_rates([("K", "AH", "T"), ("T", "AH", "M", "AA", "T", "OW")], refs)
    assert rates["PER"] == pytest.approx(100 * 1 / 9) and rates["WER"] == pytest.approx(50.0)
    # against the closest reference: one deletion from either pronunciation of word 2 -> length 6
    rates = g2p.error_rates([("K", "AE", "T"), ("T", "AH", "M", "T", "OW")], refs)
    assert rates["PER"] == pytest.approx(100 * 1 / 9) and rates["WER"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="one entry per word"):
        g2p.error_rates([("K",)], refs)


def _tiny_model(seed=0, hidden=16):
    torch.manual_seed(seed)
    return g2p.G2P(hidden=hidden, embedding=8).eval()


def test_model_shapes_and_bad_sizes():
    model = _tiny_model()
    letters, lengths = g2p.encode_words(["cab", "do"])
    logits = model(letters, lengths, g2p.encode_phonemes([("K", "AE", "B"), ("D", "UW")])[:, :-1])
    assert logits.shape == (2, 4, len(g2p.PHONEMES) + 3)
    with pytest.raises(ValueError, match="hidden must be an even int"):
        g2p.G2P(hidden=7)


def test_padding_does_not_change_a_words_outputs():
    model = _tiny_model()
    alone = model(*g2p.encode_words(["cab"]), g2p.encode_phonemes([("K", "AE", "B")])[:, :-1])
    letters, lengths = g2p.encode_words(["cab", "abcdefgh"])
    batch = model(letters, lengths, g2p.encode_phonemes([("K", "AE", "B"), ("AE", "B", "K", "D")])[:, :4])
    assert torch.allclose(alone[0], batch[0, :4], atol=1e-5)


def test_beam_of_one_is_greedy_and_beams_are_ordered():
    model = _tiny_model(seed=3)
    words = ["cab", "dog", "tomato", "either"]
    greedy = g2p.greedy_decode(model, words)
    assert all(len(h) <= g2p.MAX_PHONEMES for h in greedy)  # an untrained model never says EOS: cut at the limit
    assert [h[0][0] for h in g2p.beam_decode(model, words, beam=1)] == greedy
    with torch.no_grad():
        model.output[-1].bias[g2p.EOS] += 3.0  # hypotheses that end, so that they can be told apart
    greedy = g2p.greedy_decode(model, words)
    assert [h[0][0] for h in g2p.beam_decode(model, words, beam=1)] == greedy
    hyps = g2p.beam_decode(model, words, beam=4, n_best=4)
    for word_hyps in hyps:
        scores = [score for _, score in word_hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({h for h, _ in word_hyps}) == 4  # distinct hypotheses
    with pytest.raises(ValueError, match="beam must be a positive int"):
        g2p.beam_decode(model, words, beam=2, n_best=3)


def test_beam_score_is_the_sequences_log_probability():
    model = _tiny_model(seed=1)
    with torch.no_grad():
        model.output[-1].bias[g2p.EOS] += 4.0  # so that the hypotheses end well before the length limit
    phonemes, score = g2p.beam_decode(model, ["cab"], beam=3)[0][0]
    assert len(phonemes) < g2p.MAX_PHONEMES
    target = g2p.encode_phonemes([phonemes])
    with torch.no_grad():
        log_p = model(*g2p.encode_words(["cab"]), target[:, :-1]).log_softmax(-1)
    assert score == pytest.approx(float(log_p[0].gather(1, target[0, 1:, None]).sum()), abs=1e-4)


def test_training_learns_a_tiny_lexicon_and_word_kd_needs_a_teacher():
    words = ["cab", "dog", "cod", "bag", "gab", "bog"] * 4
    prons = [tuple({"c": "K", "a": "AE", "b": "B", "d": "D", "o": "AA", "g": "G"}[c] for c in w) for w in words]
    model = g2p.G2P(hidden=32, embedding=16)
    history = g2p.train_g2p(model, words, prons, epochs=30, batch_size=8, lr=1e-2,
                            valid=(words[:6], [(p,) for p in prons[:6]]))
    assert history["loss"][-1] < 0.2 * history["loss"][0]
    assert history["valid_PER"][history["best_epoch"] - 1] == min(history["valid_PER"])
    assert g2p.error_rates(g2p.greedy_decode(model, words[:6]), [(p,) for p in prons[:6]])["WER"] <= 50
    with pytest.raises(ValueError, match="needs a teacher"):
        g2p.train_g2p(model, words, prons, epochs=1, word_kd_weight=0.5)
    with pytest.raises(ValueError, match="same length"):
        g2p.train_g2p(model, words, prons[:3], epochs=1)


def test_word_kd_pulls_the_student_towards_the_teacher():
    words = ["cab", "dog", "cod", "bag"] * 4
    prons = [("K", "AE", "B"), ("D", "AA", "G"), ("K", "AA", "D"), ("B", "AE", "G")] * 4
    teacher = _tiny_model(seed=5, hidden=32)
    letters, lengths = g2p.encode_words(words)
    inputs = g2p.encode_phonemes(prons)[:, :-1]

    def gap(weight):
        student = g2p.G2P(hidden=16, embedding=8)
        g2p.train_g2p(student, words, prons, epochs=5, batch_size=8, teacher=teacher, word_kd_weight=weight,
                      seed=2)
        with torch.no_grad():
            return (student(letters, lengths, inputs).softmax(-1) - teacher(letters, lengths, inputs).softmax(-1)
                    ).abs().mean().item()

    assert gap(0.9) < gap(0.0)


def test_decoding_stops_at_eos():
    model = _tiny_model(seed=2)
    with torch.no_grad():
        model.output[-1].bias[g2p.EOS] += 100.0  # EOS is certain at every step
    words = ["cab", "tomato"]
    assert g2p.greedy_decode(model, words) == [(), ()]
    for hyps in g2p.beam_decode(model, words, beam=3, n_best=3):
        assert hyps[0] == ((), pytest.approx(0.0, abs=1e-4))  # log 1: the certain empty pronunciation
        assert all(len(phonemes) == 1 for phonemes, _ in hyps[1:])  # the others end right after one phoneme
    with torch.no_grad():  # EOS likely but not certain: outputs end before the length limit
        model.output[-1].bias[g2p.EOS] -= 92.0
    greedy = g2p.greedy_decode(model, words)
    assert all(len(h) < g2p.MAX_PHONEMES for h in greedy)
    assert [h[0][0] for h in g2p.beam_decode(model, words, beam=1)] == greedy


def test_batched_decoding_does_not_depend_on_the_batch():
    model = _tiny_model(seed=4)
    with torch.no_grad():
        model.output[-1].bias[g2p.EOS] += 3.0
    words = ["cab", "abcdefghijkl", "dog", "tomato", "either", "xy"]
    for beam in (1, 4):
        together = g2p.decode_words(model, words, beam=beam)
        assert g2p.decode_words(model, words, beam=beam, batch_size=1) == together
        assert g2p.decode_words(model, words[::-1], beam=beam, batch_size=4) == together[::-1]


def test_bad_decoding_and_scoring_input_names_the_argument():
    model = _tiny_model()
    with pytest.raises(ValueError, match=r"beam must be a positive int.*beam=0"):
        g2p.beam_decode(model, ["cab"], beam=0)
    with pytest.raises(ValueError, match="at least one reference"):
        g2p.error_rates([("K",)], [()])
    with pytest.raises(ValueError, match="words and targets"):
        g2p.train_g2p(model, ["cab", "dog"], [("K", "AE", "B")])
    with pytest.raises(ValueError, match="word_kd_weight=0.5 needs a teacher"):
        g2p.train_g2p(model, ["cab"], [("K", "AE", "B")], word_kd_weight=0.5)


def test_the_shipped_study_loads_its_students_in_the_arms_order():
    info, students = g2p.load_g2p_study()
    assert list(students) == list(g2p.G2P_ARMS) and len(info["runs"]) == len(g2p.G2P_ARMS) * len(info["seeds"])
    assert all(not m.training and m.hidden == info["student_hidden"] for m in students.values())
    assert g2p.load_g2p_teacher().hidden == 256
