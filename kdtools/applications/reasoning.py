r"""Reasoning distillation in miniature (the DeepSeek-R1 recipe): five-digit addition with a step-by-step trace,
a tiny decoder-only transformer as teacher and student, rejection sampling with an exact verifier, and
supervised fine-tuning (SFT) of students on answers only, on all sampled traces or on the verified ones.

**The task.** A problem is two five-digit operands written with leading zeros, ``"04512+39871="``. The
completion is a trace of one step per column, from the right, then ``>``, the six-digit sum and the end token::

    04512+39871=2+1=03,1+7=08,5+8=13,4+9=14,0+3=04,>044383$

Step ``k`` is ``a_k+b_k=s`` with ``s`` the column's sum *including the carry from the previous step* (the first
digit of the previous ``s``), written with two digits so that its first digit is the carry out. An
*answers-only* completion is ``>044383$``. Every problem has the same length, so a learned absolute position
embedding sees every position in training.

**Harder problems.** The lesson does not test on operands with more digits: with absolute positions, digit
positions never seen in training break every model for a reason that has nothing to do with reasoning. Instead a
problem's difficulty is its longest **carry chain** (the longest run of consecutive columns that each carry
into the next); training, validation and the in-distribution test use chains of at most :data:`TRAIN_MAX_CHAIN`,
the out-of-distribution test uses longer ones (3 to 5). Each trace step stays a one-column sum the model has
seen; an answers-only model must resolve a longer dependency between columns than any training problem had.

Problems are split into train / valid / test by a hash of the problem (80 / 10 / 10 %), like the G2P lesson's
words. Paper: DeepSeek-AI, "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via Reinforcement Learning",
2025 (distillation: section 2.4 and 4.1).
"""
from __future__ import annotations

import hashlib
import math
import random
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._loop import run_epochs

__all__ = ["WIDTH", "TRAIN_MAX_CHAIN", "VOCAB", "carry_chain", "make_problems", "prompt", "trace", "answer",
           "completion", "encode", "decode", "response_mask", "sft_loss", "verify", "TinyLM", "sample",
           "exact_match", "train_lm", "STUDENT_ARMS", "build_reasoning_teacher", "load_reasoning_teacher",
           "build_reasoning_study", "load_reasoning_study", "sample_teacher", "build_reasoning_kd_arm",
           "load_reasoning_kd_arm"]

WIDTH = 5  # digits per operand
TRAIN_MAX_CHAIN = 2  # longest carry chain in the training distribution
VOCAB = "_^$0123456789+=,>"  # padding, begin, end, digits, separators
PAD, BOS, EOS = 0, 1, 2
_INDEX = {c: i for i, c in enumerate(VOCAB)}
PROMPT_LEN = 1 + 2 * WIDTH + 2  # "^" + "ddddd+ddddd="
MAX_LEN = PROMPT_LEN + 7 * WIDTH + 1 + (WIDTH + 1) + 1  # the full sequence: prompt, trace, ">", sum, "$"


def carry_chain(a: int, b: int) -> int:
    """The longest run of consecutive columns (from the right) that each produce a carry."""
    longest = run = carry = 0
    for _ in range(WIDTH):
        carry = (a % 10 + b % 10 + carry) // 10
        run = run + 1 if carry else 0
        longest = max(longest, run)
        a, b = a // 10, b // 10
    return longest


def _bucket(a: int, b: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{a}+{b}".encode()).digest()[:4], "big") % 100


def make_problems(split: str, n: int, min_chain: int = 0, max_chain: int = TRAIN_MAX_CHAIN) -> List[Tuple[int, int]]:
    """``n`` distinct problems ``(a, b)`` of ``split`` ('train' 80 %, 'valid' 10 %, 'test' 10 % of all pairs, by
    a hash) whose longest carry chain lies in ``[min_chain, max_chain]``; a fixed pseudo-random sequence, so a
    smaller set is a prefix of a larger one."""
    ranges = {"train": (0, 80), "valid": (80, 90), "test": (90, 100)}
    if split not in ranges:
        raise ValueError(f"split must be one of {sorted(ranges)}, got {split!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0 <= min_chain <= max_chain <= WIDTH:
        raise ValueError(f"need 0 <= min_chain <= max_chain <= {WIDTH}, got min_chain={min_chain}, "
                         f"max_chain={max_chain}")
    low, high = ranges[split]
    rng = random.Random(f"{split}:{min_chain}:{max_chain}")
    out, seen = [], set()
    while len(out) < n:
        a, b = rng.randrange(10 ** WIDTH), rng.randrange(10 ** WIDTH)
        if (a, b) in seen or not low <= _bucket(a, b) < high or not min_chain <= carry_chain(a, b) <= max_chain:
            continue
        seen.add((a, b))
        out.append((a, b))
    return out


def prompt(a: int, b: int) -> str:
    return f"{a:0{WIDTH}d}+{b:0{WIDTH}d}="


def trace(a: int, b: int) -> str:
    """The reference trace: one ``a_k+b_k=ss,`` step per column from the right (``ss`` includes the carry in)."""
    steps, carry = [], 0
    for _ in range(WIDTH):
        s = a % 10 + b % 10 + carry
        steps.append(f"{a % 10}+{b % 10}={s:02d},")
        carry, a, b = s // 10, a // 10, b // 10
    return "".join(steps)


def answer(a: int, b: int) -> str:
    return f">{a + b:0{WIDTH + 1}d}$"


def completion(a: int, b: int, with_trace: bool = True) -> str:
    """The reference completion: trace (if ``with_trace``) and answer."""
    return (trace(a, b) if with_trace else "") + answer(a, b)


def encode(texts: Sequence[str]) -> torch.Tensor:
    """``[B, L]`` int64 token ids: BOS, the characters, padding 0 to the longest."""
    bad = sorted({c for t in texts for c in t if c not in _INDEX or c in "_^"})
    if bad:
        raise ValueError(f"texts may only use the characters {VOCAB[2:]!r}, got {bad}")
    width = 1 + max(len(t) for t in texts)
    out = torch.zeros(len(texts), width, dtype=torch.long)
    for i, t in enumerate(texts):
        out[i, :len(t) + 1] = torch.tensor([BOS] + [_INDEX[c] for c in t])
    return out


def decode(ids: Sequence[int]) -> str:
    """Token ids → text, up to and including the first end token (BOS and padding dropped)."""
    out = []
    for i in ids:
        i = int(i)
        if i > BOS:
            out.append(VOCAB[i])
        if i == EOS:
            break
    return "".join(out)


def response_mask(tokens: torch.Tensor, prompt_len: int = PROMPT_LEN) -> torch.Tensor:
    """``[B, L-1]`` bool: which next-token targets ``tokens[:, 1:]`` belong to the response (not the prompt, not
    padding)."""
    targets = tokens[:, 1:]
    positions = torch.arange(1, tokens.shape[1])[None, :]
    return (positions >= prompt_len) & (targets != PAD)


def sft_loss(logits: torch.Tensor, tokens: torch.Tensor, prompt_len: int = PROMPT_LEN) -> torch.Tensor:
    r"""The SFT loss: next-token cross-entropy averaged over the response tokens of the whole batch,

    .. math:: \mathcal L_{SFT} = -\frac{1}{\sum_{b,l} m_{b,l}} \sum_{b,l} m_{b,l} \log p^s(x_{b,l+1}\mid x_{b,\le l})

    with :math:`m` = :func:`response_mask`; ``logits`` ``[B, L-1, V]`` predict ``tokens[:, 1:]``. The prompt is
    given, not learned (as in R1's SFT and most instruction tuning), and padding is not a token.
    """
    if logits.ndim != 3 or tokens.ndim != 2 or logits.shape[:2] != (tokens.shape[0], tokens.shape[1] - 1):
        raise ValueError(f"logits must be [B, L-1, V] for tokens [B, L], got logits {tuple(logits.shape)} and "
                         f"tokens {tuple(tokens.shape)}")
    mask = response_mask(tokens, prompt_len)
    return F.cross_entropy(logits[mask], tokens[:, 1:][mask])


def verify(a: int, b: int, text: str) -> Dict[str, object]:
    """Check a completion of problem ``(a, b)``: ``{"answer_ok": the text ends in ``>`` + the right six-digit sum +
    ``$``, "steps": [True/False per column, None where missing], "steps_ok": every step is right}``.

    The rejection-sampling filter keeps ``answer_ok`` (R1's rule-based reward checks the final answer only); a step
    ``x+y=ss,`` is right when ``x``, ``y`` are the column's digits and ``ss`` their sum plus the previous carry.
    """
    answer_ok = text.endswith("$") and text.count(">") == 1 and text[text.index(">"):] == answer(a, b)
    body = text.split(">")[0]
    steps_text = [] if body == "" else body.split(",")[:-1] if body.endswith(",") else body.split(",")
    steps: List[Optional[bool]] = []
    carry, x, y = 0, a, b
    for k in range(WIDTH):
        s = x % 10 + y % 10 + carry
        steps.append(steps_text[k] == f"{x % 10}+{y % 10}={s:02d}" if k < len(steps_text) else None)
        carry, x, y = s // 10, x // 10, y // 10
    well_formed = len(steps_text) == WIDTH and body.endswith(",")
    return {"answer_ok": bool(answer_ok), "steps": steps, "steps_ok": all(s is True for s in steps) and well_formed}


class _Block(nn.Module):
    """Pre-norm transformer block with causal self-attention and a key/value cache for decoding."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x, cache=None):
        B, L, D = x.shape
        q, k, v = (t.view(B, L, self.heads, D // self.heads).transpose(1, 2)
                   for t in self.qkv(self.norm1(x)).chunk(3, -1))
        if cache is not None:  # decoding one token: it sees every cached position
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
        x = x + self.out(attended.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.norm2(x)), (k, v)


class TinyLM(nn.Module):
    """A decoder-only transformer over :data:`VOCAB` with learned absolute positions; ``forward(tokens)`` returns
    next-token logits ``[B, L, V]``."""

    def __init__(self, dim: int = 64, layers: int = 2, heads: int = 4, max_len: int = MAX_LEN):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
        self.token = nn.Embedding(len(VOCAB), dim)
        self.position = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, 2 * dim) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, len(VOCAB))

    def step(self, tokens: torch.Tensor, caches=None, offset: int = 0):
        """``(logits, caches)`` for ``tokens`` placed at positions ``offset, offset + 1, ...`` after the cached
        ones (``caches=None``: a fresh causal pass)."""
        x = self.token(tokens) + self.position(torch.arange(offset, offset + tokens.shape[1]))
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, None if caches is None else caches[i])
            new_caches.append(cache)
        return self.head(self.norm(x)), new_caches

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.step(tokens)[0]

    @torch.no_grad()
    def generate(self, prompts: torch.Tensor, temperature: float = 0.0, max_new: int = MAX_LEN - PROMPT_LEN,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Continue ``prompts`` ``[B, P]`` (same length, no padding) by ``max_new`` tokens at most; greedy when
        ``temperature`` is 0, else sampled from softmax(logits / temperature). After the end token, padding."""
        self.eval()
        logits, caches = self.step(prompts)
        out = torch.zeros(len(prompts), max_new, dtype=torch.long)
        done = torch.zeros(len(prompts), dtype=torch.bool)
        for t in range(max_new):
            scores = logits[:, -1].index_fill(-1, torch.tensor([PAD, BOS]), -math.inf)
            if temperature == 0:
                token = scores.argmax(-1)
            else:
                token = torch.multinomial((scores / temperature).softmax(-1), 1, generator=generator)[:, 0]
            token = token.masked_fill(done, PAD)
            out[:, t] = token
            done |= token == EOS
            if done.all() or t == max_new - 1:
                break
            logits, caches = self.step(token[:, None], caches, offset=prompts.shape[1] + t)
        return out


def sample(model: TinyLM, problems: Sequence[Tuple[int, int]], temperature: float = 0.0,
           generator: Optional[torch.Generator] = None, batch_size: int = 1000) -> List[str]:
    """The model's completion of each problem (greedy at temperature 0)."""
    texts = []
    for start in range(0, len(problems), batch_size):
        part = problems[start:start + batch_size]
        ids = model.generate(encode([prompt(a, b) for a, b in part]), temperature, generator=generator)
        texts += [decode(row) for row in ids]
    return texts


def exact_match(model: TinyLM, problems: Sequence[Tuple[int, int]]) -> float:
    """Greedy decoding's exact-match accuracy (%): the final answer is right (the trace is not checked)."""
    texts = sample(model, problems)
    return 100 * sum(verify(a, b, t)["answer_ok"] for (a, b), t in zip(problems, texts)) / len(problems)


def train_lm(model: TinyLM, problems: Sequence[Tuple[int, int]], completions: Sequence[str], epochs: int = 10,
             batch_size: int = 64, lr: float = 2e-3, seed: int = 0, teacher: Optional[TinyLM] = None,
             kd_weight: float = 0.0, valid: Optional[Sequence[Tuple[int, int]]] = None,
             stop_after: Optional[int] = None, progress: bool = False) -> dict:
    r"""SFT on ``prompt(problems[i]) + completions[i]``: :func:`sft_loss`, or with a ``teacher``
    :math:`(1-\alpha)\,\mathcal L_{SFT} + \alpha\,\mathcal L_{tok}` with :math:`\alpha` = ``kd_weight`` and
    :math:`\mathcal L_{tok}` = :func:`kdtools.losses.token_kd_loss` (T = 1) on the same response tokens. AdamW
    (weight decay 0.01), cosine schedule to 0, gradient norm clipped at 1; returns :func:`run_epochs`'s history with
    the greedy exact match (%) on ``valid`` after each epoch."""
    from ..losses import token_kd_loss
    from ..runtime import seed_everything

    if len(problems) != len(completions) or not problems:
        raise ValueError(f"problems and completions must be non-empty and of the same length, got "
                         f"{len(problems)} and {len(completions)}")
    if kd_weight > 0 and teacher is None:
        raise ValueError(f"kd_weight={kd_weight} needs a teacher, got teacher=None")
    seed_everything(seed)
    tokens = encode([prompt(a, b) + c for (a, b), c in zip(problems, completions)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    def batch_loss(idx):
        batch = tokens[idx]
        batch = batch[:, :int((batch != PAD).sum(1).max())]
        logits = model(batch[:, :-1])
        loss = sft_loss(logits, batch)
        if kd_weight > 0:
            with torch.no_grad():
                teacher_logits = teacher(batch[:, :-1])
            kd = token_kd_loss(logits, teacher_logits, mask=response_mask(batch))
            loss = (1 - kd_weight) * loss + kd_weight * kd
        return loss

    return run_epochs(model, len(problems), batch_loss, optimizer, epochs=epochs, batch_size=batch_size,
                      seed=seed, validate=(lambda: exact_match(model, valid)) if valid is not None else None,
                      score_name="exact match", stop_after=stop_after, clip_norm=1.0,
                      progress=progress)


# ----------------------------------------------------------------------------- zoo builders
TEACHER = dict(dim=96, layers=3, heads=4)
STUDENT = dict(dim=64, layers=2, heads=4)
# arm: (training data, epochs as a multiple of the study's, token-level KD from the teacher?)
STUDENT_ARMS = {
    "answers only": ("answers", 1, False),
    "answers only, 3x epochs": ("answers", 3, False),  # about the trace arms' compute: 21 tokens vs 56 a problem
    "all sampled traces": ("first sample", 1, False),
    "rejection-sampled traces": ("first kept sample", 1, False),
    "rejection-sampled + token KD": ("first kept sample", 1, True),
}


def build_reasoning_teacher(n_train: int = 12_000, epochs: int = 10, lr: float = 2e-3, seed: int = 0,
                            n_valid: int = 500):
    """Zoo builder of the lesson's teacher: a :class:`TinyLM` of :data:`TEACHER`'s size trained with
    :func:`sft_loss` on reference traces of ``n_train`` training problems; the best validation epoch is kept."""
    from ..runtime import seed_everything

    torch.set_num_threads(1)
    problems = make_problems("train", n_train)
    seed_everything(seed)
    model = TinyLM(**TEACHER)
    history = train_lm(model, problems, [completion(a, b) for a, b in problems], epochs=epochs, lr=lr, seed=seed,
                       valid=make_problems("valid", n_valid), progress=True)
    model.load_state_dict(history.pop("best_state"))
    info = {**TEACHER, "n_train": n_train, "history": history,
            "parameters": sum(p.numel() for p in model.parameters())}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, info


def load_reasoning_teacher(name: str = "addition-trace-teacher") -> TinyLM:
    from ..zoo.artifacts import load_network

    return load_network(name, lambda info: TinyLM(info["dim"], info["layers"], info["heads"]))[0]


SAMPLE_CHUNK = 100  # problems per sampling chunk; chunk i uses a generator seeded with seed + i


def sample_teacher(teacher: TinyLM, problems: Sequence[Tuple[int, int]], k: int, temperature: float,
                   seed: int = 0) -> List[List[str]]:
    """``k`` sampled completions per problem, in chunks of :data:`SAMPLE_CHUNK` problems, chunk ``i`` drawing from
    a generator seeded with ``seed + i`` (so the first chunk can be replayed alone)."""
    out = []
    for i, start in enumerate(range(0, len(problems), SAMPLE_CHUNK)):
        part = [p for p in problems[start:start + SAMPLE_CHUNK] for _ in range(k)]
        texts = sample(teacher, part, temperature, torch.Generator().manual_seed(seed + i), batch_size=len(part))
        out += [texts[j:j + k] for j in range(0, len(texts), k)]
    return out


def _student_job(job: dict) -> dict:
    from ..runtime import seed_everything

    torch.set_num_threads(1)
    arm, seed = job["arm"], job["seed"]
    problems = [tuple(p) for p in job["problems"]]
    completions = job["completions"]
    _, epoch_factor, with_kd = STUDENT_ARMS[arm]
    teacher = load_reasoning_teacher() if with_kd else None
    seed_everything(seed)
    model = TinyLM(**STUDENT)
    valid = make_problems("valid", job["n_valid"])
    history = train_lm(model, problems, completions, epochs=epoch_factor * job["epochs"], seed=seed, teacher=teacher,
                       kd_weight=job["kd_weight"] if teacher is not None else 0.0, valid=valid)
    best_state = history.pop("best_state")
    tests = {"in distribution": make_problems("test", job["n_test"]),
             "longer carry chains": make_problems("test", job["n_test"], TRAIN_MAX_CHAIN + 1, WIDTH)}
    result = {"arm": arm, "seed": seed, "n_examples": len(problems), "history": history,
              "last": {name: exact_match(model, p) for name, p in tests.items()},
              "state": {k: v.clone() for k, v in model.state_dict().items()}}
    model.load_state_dict(best_state)
    result["best"] = {name: exact_match(model, p) for name, p in tests.items()}
    print(f"{arm}, seed {seed}: {history['seconds']} s, last {result['last']}, best {result['best']}", flush=True)
    return result


def build_reasoning_study(n_train: int = 6000, k: int = 4, temperature: float = 1.0, n_valid: int = 300,
                          n_test: int = 1000, epochs: int = 12, seeds=(0, 1, 2), kd_weight: float = 0.5,
                          sample_seed: int = 0, arms: Sequence[str] = tuple(STUDENT_ARMS), workers: int = 2):
    """Zoo builder of the lesson's comparison. Stage 1: the teacher samples ``k`` completions of each of
    ``n_train`` training problems at ``temperature``; the verifier marks them. Stage 2: students of
    :data:`STUDENT`'s size, one per arm of ``arms`` (names of :data:`STUDENT_ARMS`) and seed, trained for
    ``epochs`` epochs (times the arm's factor) on one completion per problem: the reference answer; the teacher's
    first sample; its first verified sample (problems with none are dropped); optionally with token-level KD of
    weight ``kd_weight``. Stores the samples (uint8 token ids), every run's record and the first seed's
    students."""
    from ..runtime import map_in_processes
    from ..zoo.artifacts import first_seed_states

    torch.set_num_threads(1)
    teacher = load_reasoning_teacher()
    problems = make_problems("train", n_train)
    samples = sample_teacher(teacher, problems, k, temperature, sample_seed)
    checks = [[verify(a, b, t) for t in row] for (a, b), row in zip(problems, samples)]
    answer_ok = torch.tensor([[c["answer_ok"] for c in row] for row in checks])
    kept = [(p, next(t for t, c in zip(row, rc) if c["answer_ok"]))
            for p, row, rc in zip(problems, samples, checks) if any(c["answer_ok"] for c in rc)]
    unknown = [arm for arm in arms if arm not in STUDENT_ARMS]
    if unknown:
        raise ValueError(f"arms must be names of STUDENT_ARMS {list(STUDENT_ARMS)}, got {unknown}")
    data = {"answers": (problems, [answer(a, b) for a, b in problems]),
            "first sample": (problems, [row[0] for row in samples]),
            "first kept sample": ([p for p, _ in kept], [t for _, t in kept])}
    jobs = [dict(arm=arm, seed=s, problems=data[STUDENT_ARMS[arm][0]][0], completions=data[STUDENT_ARMS[arm][0]][1],
                 n_valid=n_valid, n_test=n_test, epochs=epochs, kd_weight=kd_weight) for arm in arms for s in seeds]
    jobs.sort(key=lambda job: -STUDENT_ARMS[job["arm"]][1])  # the longest runs first: the two workers end together
    runs = map_in_processes(_student_job, jobs, workers)
    tensors = first_seed_states(runs, seeds[0], torch.float16)
    teacher_scores = {"in distribution": exact_match(teacher, make_problems("test", n_test)),
                      "longer carry chains": exact_match(teacher, make_problems("test", n_test, TRAIN_MAX_CHAIN + 1,
                                                                                WIDTH))}
    tensors["samples"] = _pack(samples)
    info = {"n_train": n_train, "k": k, "temperature": temperature, "sample_seed": sample_seed,
            "yield": {"kept samples": int(answer_ok.sum()), "samples": answer_ok.numel(),
                      "problems with a kept sample": len(kept), "problems": n_train},
            "runs": runs, "teacher_test": teacher_scores, "n_valid": n_valid, "n_test": n_test, "epochs": epochs,
            "seeds": list(seeds), "kd_weight": kd_weight, "student": STUDENT, "arms": list(arms)}
    return tensors, info


def build_reasoning_kd_arm(study: str = "addition-trace-students", arm: str = "rejection-sampled + token KD",
                           workers: int = 2):
    """Zoo builder of one more arm of the shipped study ``study``, on the same teacher samples and settings (the
    study's recipe is left alone, so its artefact stays as it was): every seed of ``arm``; ``(first seed's student,
    {"runs": ...})``."""
    from ..runtime import map_in_processes
    from ..zoo.artifacts import first_seed_states, load_artifact

    torch.set_num_threads(1)
    tensors, entry = load_artifact(study)
    info = entry["info"]
    samples = [[decode(row) for row in problem] for problem in tensors["samples"].long()]
    problems = make_problems("train", info["n_train"])
    verified = [[t for t in row if verify(*p, t)["answer_ok"]] for p, row in zip(problems, samples)]
    kept = [(p, ok[0]) for p, ok in zip(problems, verified) if ok]
    if STUDENT_ARMS[arm][0] != "first kept sample":
        raise ValueError(f"arm must train on the kept samples, got {arm!r}")
    jobs = [dict(arm=arm, seed=s, problems=[p for p, _ in kept], completions=[t for _, t in kept],
                 n_valid=info["n_valid"], n_test=info["n_test"], epochs=info["epochs"], kd_weight=info["kd_weight"])
            for s in info["seeds"]]
    runs = map_in_processes(_student_job, jobs, workers)
    return first_seed_states(runs, info["seeds"][0], torch.float16), {
        "study": study, "arm": arm, "runs": runs, "kd_weight": info["kd_weight"], "student": STUDENT}


def _pack(samples: Sequence[Sequence[str]]) -> torch.Tensor:
    """``[n, k, MAX_LEN - PROMPT_LEN]`` uint8 token ids of the completions (no BOS), padded with 0."""
    width = MAX_LEN - PROMPT_LEN
    out = torch.zeros(len(samples), len(samples[0]), width, dtype=torch.uint8)
    for i, row in enumerate(samples):
        for j, text in enumerate(row):
            out[i, j, :len(text)] = torch.tensor([_INDEX[c] for c in text[:width]], dtype=torch.uint8)
    return out


def load_reasoning_study(name: str = "addition-trace-students"):
    """``(info, students, samples)``: the comparison's record, the first seed's student of every arm (eval mode)
    and the teacher's samples as text (``[n_train][k]``)."""
    from ..zoo.artifacts import load_artifact

    tensors, entry = load_artifact(name)
    samples = [[decode(row) for row in problem] for problem in tensors.pop("samples").long()]
    students = {}
    for arm in entry["info"]["arms"]:
        model = TinyLM(**entry["info"]["student"])
        model.load_state_dict({key.split("/", 1)[1]: v.float() for key, v in tensors.items()
                               if key.startswith(arm + "/")})
        students[arm] = model.eval()
    return entry["info"], students, samples


def load_reasoning_kd_arm(name: str = "addition-trace-kd-students"):
    """``(info, {arm: first seed's student})`` of :func:`build_reasoning_kd_arm`'s artefact."""
    from ..zoo.artifacts import load_networks

    students, entry = load_networks(name, lambda info: TinyLM(**info["student"]))
    return entry["info"], {arm: model.float() for arm, model in students.items()}
