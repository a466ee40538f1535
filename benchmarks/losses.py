"""Forward+backward time of every kdtools.losses function against a naive formulation of its equation.

Not a test: run it by hand (``.venv/bin/python benchmarks/losses.py``) and paste the table in the
issue or the pull request. "naive" is a direct broadcast formulation written from the paper's
equation — for NST and RKD-angle the one the reference code (RepDistiller) uses, which builds
``[B, C, C, HW]`` and ``[B, B, D]`` tensors. Each row also shows the relative difference of the two
values, so a fast but wrong loss would show up. Sizes are those of CIFAR-style training.

Usage: ``python benchmarks/losses.py [--device cpu|cuda] [--repeats N] [--threads N] [--only name ...]``
(on a CPU shared with another busy process, ``--threads 1`` avoids OpenMP contention skewing the times).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import kdtools.losses as L


# ----------------------------------------------------------------------------- naive formulations
def naive_kd(s, t, T=4.0):
    p_t = torch.softmax(t.detach() / T, 1)
    p_s = torch.softmax(s / T, 1)
    return (p_t * (p_t.log() - p_s.log())).sum(1).mean() * T * T


def naive_dkd(s, t, y, alpha=1.0, beta=8.0, T=4.0):
    """mdistiller's formula: masked probability sums, log of them, and the -1000 mask trick."""
    t = t.detach()
    gt = F.one_hot(y, s.shape[1]).to(s.dtype)
    p_s, p_t = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], 1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], 1)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1).mean() * T * T
    q_t = torch.softmax(t / T - 1000 * gt, 1)
    log_q_s = torch.log_softmax(s / T - 1000 * gt, 1)
    nckd = (torch.xlogy(q_t, q_t) - q_t * log_q_s).sum(1).mean() * T * T
    return alpha * tckd + beta * nckd


def naive_at(s, t):
    def q(f):
        a = f.pow(2).sum(1).flatten(1)
        return a / a.pow(2).sum(1, keepdim=True).sqrt()
    return (q(s) - q(t.detach())).pow(2).mean()


def naive_nst(s, t):
    """RepDistiller's formulation: the polynomial kernel through [B, C, C, HW] products."""
    s = F.normalize(s.flatten(2), dim=2)
    t = F.normalize(t.detach().flatten(2), dim=2)

    def poly(a, b):
        return (a.unsqueeze(1) * b.unsqueeze(2)).sum(-1).pow(2)

    return poly(t, t).mean() + poly(s, s).mean() - 2 * poly(s, t).mean()


def naive_fsp(s_pairs, t_pairs):
    """G_ij = mean over positions of F_a^i F_b^j through a [B, m, n, HW] broadcast (as RepDistiller)."""
    def g(a, b):
        return (a.flatten(2).unsqueeze(2) * b.flatten(2).unsqueeze(1)).mean(-1)
    return sum((g(*ps) - g(*(x.detach() for x in pt))).pow(2).mean() for ps, pt in zip(s_pairs, t_pairs))


def naive_rkd_distance(s, t):
    def psi(e):
        d = (e.unsqueeze(0) - e.unsqueeze(1)).pow(2).sum(-1).clamp_min(1e-12).sqrt()
        d = d * (1 - torch.eye(e.shape[0], dtype=e.dtype, device=e.device))
        return d / d[d > 0].mean()
    return F.smooth_l1_loss(psi(s), psi(t.detach()))


def naive_rkd_angle(s, t):
    """RepDistiller's formulation: [B, B, D] difference vectors, normalised, batched products."""
    def psi(e):
        unit = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(unit, unit.transpose(1, 2)).flatten()
    return F.smooth_l1_loss(psi(s), psi(t.detach()))


def naive_crd_nce(scores, n_data):
    k = scores.shape[1] - 1
    noise = k / n_data
    pos, neg = scores[:, 0], scores[:, 1:]
    return -((pos / (pos + noise + 1e-7)).log().sum() + (noise / (neg + noise + 1e-7)).log().sum()) / scores.shape[0]


def naive_token_kd(s, t, mask, T=1.0):
    p_t = torch.softmax(t.detach() / T, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / T, -1))).sum(-1) * T * T
    return (kl * mask).sum() / mask.sum()


def naive_ld(s, t, T=10.0):
    p_t = torch.softmax(t.detach() / T, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / T, -1))).mean(-1) * T * T  # mean over bins
    return kl.mean()


def naive_fg(s, t, mask, a, b):
    m = mask.unsqueeze(1)
    sq = (s - t.detach()) ** 2
    return (a * (sq * m).sum() + b * (sq * (1 - m)).sum()) / s.shape[0]


# ----------------------------------------------------------------------------- cases
def make_cases(device):
    g = torch.Generator(device="cpu").manual_seed(0)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    y = torch.randint(0, 100, (64,), generator=g).to(device)
    y_big = torch.randint(0, 1000, (256,), generator=g).to(device)
    mask_tok = (torch.rand(32, 128, generator=g) > 0.2).float().to(device)
    fg_mask = (torch.rand(16, 32, 32, generator=g) > 0.8).float().to(device)
    fsp_s = [r(64, 64, 16, 16), r(64, 64, 16, 16)]
    fsp_t = [r(64, 64, 16, 16), r(64, 64, 16, 16)]
    crd = L.CRDLoss(256, 256, n_data=50000, n_negatives=4096).to(device)
    index = torch.randint(0, 50000, (64,), generator=g).to(device)
    crd(r(64, 256), r(64, 256), index)  # fixes Z

    # name, size, inputs needing grad (student), ours(*inputs), naive(*inputs) or None
    return [
        ("kd", "B=64, C=100", [r(64, 100, scale=3)], r(64, 100, scale=3),
         lambda s, t: L.kd_loss(s, t), naive_kd),
        ("dkd", "B=64, C=100", [r(64, 100, scale=3)], r(64, 100, scale=3),
         lambda s, t: L.dkd_loss(s, t, y), lambda s, t: naive_dkd(s, t, y)),
        ("kd", "B=256, C=1000", [r(256, 1000, scale=3)], r(256, 1000, scale=3),
         lambda s, t: L.kd_loss(s, t), naive_kd),
        ("dkd", "B=256, C=1000", [r(256, 1000, scale=3)], r(256, 1000, scale=3),
         lambda s, t: L.dkd_loss(s, t, y_big), lambda s, t: naive_dkd(s, t, y_big)),
        ("at", "B=64, C=64, 32x32", [r(64, 64, 32, 32)], r(64, 128, 32, 32),
         L.at_loss, naive_at),
        ("nst (poly)", "B=64, C=64, 16x16", [r(64, 64, 16, 16)], r(64, 64, 16, 16),
         L.nst_loss, naive_nst),
        ("fsp", "B=64, 64x64, 16x16", fsp_s, fsp_t,
         lambda a, b, t: L.fsp_loss([(a, b)], [tuple(t)]), lambda a, b, t: naive_fsp([(a, b)], [tuple(t)])),
        ("rkd distance", "B=64, D=512", [r(64, 512)], r(64, 512),
         L.rkd_distance_loss, naive_rkd_distance),
        ("rkd angle", "B=64, D=512", [r(64, 512)], r(64, 512),
         L.rkd_angle_loss, naive_rkd_angle),
        ("crd nce", "B=64, K=4096", [r(64, 4097).exp() / 50000], None,
         lambda s, _: L.crd_nce_loss(s, 50000), lambda s, _: naive_crd_nce(s, 50000)),
        ("CRDLoss module", "B=64, K=4096, n=50k", [r(64, 256)], r(64, 256),
         lambda s, t: crd(s, t, index), None),
        ("token kd", "B=32, L=128, V=1000", [r(32, 128, 1000)], r(32, 128, 1000),
         lambda s, t: L.token_kd_loss(s, t, mask_tok), lambda s, t: naive_token_kd(s, t, mask_tok)),
        ("ld", "N=4096, 4, 17 bins", [r(4096, 4, 17, scale=3)], r(4096, 4, 17, scale=3),
         L.localization_distillation_loss, naive_ld),
        ("fg feature", "B=16, C=256, 32x32", [r(16, 256, 32, 32)], r(16, 256, 32, 32),
         lambda s, t: L.foreground_weighted_feature_loss(s, t, fg_mask, 1e-3, 5e-4),
         lambda s, t: naive_fg(s, t, fg_mask, 1e-3, 5e-4)),
    ]


def _fwd_bwd(fn, inputs, other):
    for x in inputs:
        x.grad = None
    value = fn(*inputs, other)
    value.backward()
    return value.detach()


def time_pair(ours, naive, inputs, other, device, repeats, budget_s=4.0):
    """Best-of-``repeats`` milliseconds of forward+backward for ``ours`` and ``naive``.

    The two are run alternately, so a busy neighbour process slows both alike, and the minimum
    is reported (the least disturbed run). Returns ``(ours_ms, naive_ms, ours_value, naive_value)``.
    """
    fns = {"ours": ours, "naive": naive} if naive is not None else {"ours": ours}
    values = {k: _fwd_bwd(fn, inputs, other) for k, fn in fns.items()}  # warm-up
    times = {k: [] for k in fns}
    start_all = time.perf_counter()
    for _ in range(repeats):
        for key, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            _fwd_bwd(fn, inputs, other)
            if device == "cuda":
                torch.cuda.synchronize()
            times[key].append((time.perf_counter() - start) * 1e3)
        if time.perf_counter() - start_all > budget_s and len(times["ours"]) >= 3:
            break
    best = {k: min(v) for k, v in times.items()}
    return best["ours"], best.get("naive"), values["ours"], values.get("naive")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} CPU threads; "
          f"forward+backward, best of up to {args.repeats} alternating runs")
    header = f"{'loss':<16} {'size':<22} {'ours ms':>9} {'naive ms':>9} {'speed-up':>9} {'rel. diff':>10}"
    print(header)
    print("-" * len(header))
    for name, size, inputs, other, ours, naive in make_cases(args.device):
        if args.only and not any(o in name for o in args.only):
            continue
        inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
        ms, naive_ms, value, naive_value = time_pair(ours, naive, inputs, other, args.device, args.repeats)
        if naive is None:
            print(f"{name:<16} {size:<22} {ms:9.2f} {'-':>9} {'-':>9} {'-':>10}")
            continue
        rel = (value - naive_value).abs().item() / max(naive_value.abs().item(), 1e-12)
        print(f"{name:<16} {size:<22} {ms:9.2f} {naive_ms:9.2f} {naive_ms / ms:8.1f}x {rel:10.1e}")

if __name__ == "__main__":
    main()
