"""kdtools.applications.reasoning: the addition task and its traces, the verifier, the response-only SFT loss, the
tiny decoder's cache and sampling, and training (plain SFT and with token-level KD)."""
import pytest
import torch

from kdtools.applications import reasoning as R


def test_trace_and_answer_by_hand():
    assert R.prompt(4512, 39871) == "04512+39871="
    assert R.trace(4512, 39871) == "2+1=03,1+7=08,5+8=13,4+9=14,0+3=04,"
    assert R.answer(4512, 39871) == ">044383$"
    assert R.completion(99999, 1, with_trace=False) == ">100000$"
    assert len("^" + R.prompt(1, 2) + R.completion(1, 2)) == R.MAX_LEN


@pytest.mark.parametrize("a, b, chain", [(0, 0, 0), (5, 5, 1), (95, 5, 2), (99999, 1, 5), (4512, 39871, 2),
                                         (50505, 50505, 1), (9, 91, 2)])
def test_carry_chain_by_hand(a, b, chain):
    assert R.carry_chain(a, b) == chain


def test_problem_splits_are_disjoint_nested_and_respect_the_chain():
    train, valid, test = (set(R.make_problems(s, 400)) for s in ("train", "valid", "test"))
    hard = R.make_problems("test", 200, 3, 5)
    assert not (train & valid or train & test or valid & test or train & set(hard))
    assert R.make_problems("train", 50) == R.make_problems("train", 100)[:50]
    assert max(R.carry_chain(*p) for p in train) <= R.TRAIN_MAX_CHAIN
    assert min(R.carry_chain(*p) for p in hard) >= 3
    with pytest.raises(ValueError, match="split must be one of"):
        R.make_problems("dev", 3)
    with pytest.raises(ValueError, match="min_chain"):
        R.make_problems("test", 3, 4, 2)


def test_encode_decode_round_trip_and_bad_characters():
    tokens = R.encode(["12+3=", ">15$"])
    assert tokens[0, 0] == R.BOS and tokens[1, 5:].eq(R.PAD).all()
    assert R.decode(tokens[0]) == "12+3=" and R.decode(R.encode([">15$9"])[0]) == ">15$"
    with pytest.raises(ValueError, match="may only use the characters"):
        R.encode(["1 + 2"])


def test_verifier_separates_the_answer_from_the_steps():
    right = R.completion(4512, 39871)
    assert R.verify(4512, 39871, right) == {"answer_ok": True, "steps": [True] * 5, "steps_ok": True}
    wrong_step = right.replace("1+7=08", "1+7=09")  # a wrong step, the right answer
    check = R.verify(4512, 39871, wrong_step)
    assert check["answer_ok"] and not check["steps_ok"] and check["steps"] == [True, False, True, True, True]
    wrong_answer = right.replace(">044383$", ">044384$")
    assert not R.verify(4512, 39871, wrong_answer)["answer_ok"] and R.verify(4512, 39871, wrong_answer)["steps_ok"]
    assert R.verify(4512, 39871, ">044383$")["answer_ok"] and R.verify(4512, 39871, ">044383$")["steps"] == [None] * 5
    for broken in (">044383", ">0443830$", ">044383$>044383$", "2+1=03,>044383", ""):
        assert not R.verify(4512, 39871, broken)["answer_ok"], broken


def test_response_mask_and_sft_loss_by_hand():
    tokens = torch.tensor([[1, 5, 6, 7, 8, 2], [1, 5, 6, 9, 2, 0]])
    mask = R.response_mask(tokens, prompt_len=3)
    assert mask.tolist() == [[False, False, True, True, True], [False, False, True, True, False]]
    logits = torch.randn(2, 5, len(R.VOCAB), generator=torch.Generator().manual_seed(0))
    log_p = logits.log_softmax(-1)
    by_hand = -(log_p[0, 2, 7] + log_p[0, 3, 8] + log_p[0, 4, 2] + log_p[1, 2, 9] + log_p[1, 3, 2]) / 5
    assert torch.allclose(R.sft_loss(logits, tokens, prompt_len=3), by_hand)
    with pytest.raises(ValueError, match="logits must be"):
        R.sft_loss(logits[:, :4], tokens, 3)


def test_sft_loss_gradcheck():
    tokens = torch.tensor([[1, 5, 6, 7, 8, 2], [1, 5, 6, 9, 2, 0]])
    logits = torch.randn(2, 5, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: R.sft_loss(z, tokens, 3), (logits,))


def _tiny(seed=0):
    torch.manual_seed(seed)
    return R.TinyLM(dim=16, layers=2, heads=2).eval()


def test_cached_decoding_equals_the_full_causal_pass():
    model = _tiny()
    problems = R.make_problems("train", 3)
    tokens = R.encode([R.prompt(a, b) + R.completion(a, b) for a, b in problems])
    full = model(tokens)
    logits, caches = model.step(tokens[:, :R.PROMPT_LEN])
    steps = [logits[:, -1]]
    for t in range(R.PROMPT_LEN, tokens.shape[1] - 1):
        logits, caches = model.step(tokens[:, t:t + 1], caches, offset=t)
        steps.append(logits[:, -1])
    assert torch.allclose(torch.stack(steps, 1), full[:, R.PROMPT_LEN - 1:-1], atol=1e-5)
    # causality: changing a later token leaves earlier logits alone
    changed = tokens.clone()
    changed[:, -3] = 5
    assert torch.allclose(model(changed)[:, :-3], full[:, :-3], atol=1e-6)
    with pytest.raises(ValueError, match="divisible by heads"):
        R.TinyLM(dim=10, heads=4)


def test_sampling_is_seeded_and_greedy_is_the_argmax_path():
    model = _tiny()
    problems = R.make_problems("train", 4)
    one = R.sample(model, problems, 1.0, torch.Generator().manual_seed(3))
    two = R.sample(model, problems, 1.0, torch.Generator().manual_seed(3))
    assert one == two
    greedy = R.sample(model, problems[:1])[0]
    tokens = R.encode([R.prompt(*problems[0]) + greedy])
    logits = model(tokens)[0, R.PROMPT_LEN - 1:-1]
    logits[:, [R.PAD, R.BOS]] = -float("inf")
    ended = greedy.endswith("$")
    assert logits.argmax(-1).tolist() == tokens[0, R.PROMPT_LEN:].tolist()[:len(logits)] or not ended


def test_training_learns_and_kd_needs_a_teacher():
    problems = R.make_problems("train", 64)
    completions = [R.completion(a, b, with_trace=False) for a, b in problems]
    model = _tiny()
    history = R.train_lm(model, problems, completions, epochs=3, batch_size=16, lr=3e-3, seed=0)
    assert history["loss"][-1] < history["loss"][0]
    student, teacher = _tiny(1), _tiny(2)
    kd = R.train_lm(student, problems, completions, epochs=1, batch_size=16, seed=0, teacher=teacher, kd_weight=0.5)
    assert kd["loss"][0] > 0
    with pytest.raises(ValueError, match="needs a teacher"):
        R.train_lm(_tiny(), problems, completions, epochs=1, kd_weight=0.5)
    with pytest.raises(ValueError, match="same length"):
        R.train_lm(_tiny(), problems, completions[:3], epochs=1)


def test_pack_round_trips_the_samples():
    samples = [[R.completion(1, 2), ">000003$"], ["", "1+2=03,>0"]]
    packed = R._pack(samples)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 2, R.MAX_LEN - R.PROMPT_LEN)
    assert [[R.decode(row) for row in problem] for problem in packed.long()] == samples
