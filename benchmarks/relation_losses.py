"""How the relation-based losses scale with the batch size (a benchmark, not a test).

Times one forward + backward pass of each loss of Module 4 on random features shaped like the shared
protocol's (student ``cnn-4x1``: 16-dimensional embedding, 8×7×7 and 16×7×7 stage maps; teacher ``cnn-32x2``:
128-dimensional embedding) for several batch sizes B, and fits the exponent of B in the time. FSP compares
each example with itself (linear in B), RKD's distances compare pairs (B²) and its angles triplets (B³), CRD
compares each example with K + 1 entries of a memory bank (linear in B, times K). The minimum over repeats is
reported, which is robust to other jobs on the machine. Then, as ``feature_methods.py`` does for Module 3,
the seconds per epoch of the registered Module 4 arms on the shared protocol relative to CE.
Usage: ``python benchmarks/relation_losses.py [epochs]``.
The figures feed the table on the Module 4 page (book/04_relation.md).
"""
import sys
import time

import numpy as np
import torch

import feature_methods  # noqa: E402  (the benchmark next to this one)
from kdtools import protocol
from kdtools.losses import CRDLoss, fsp_loss, rkd_angle_loss, rkd_distance_loss

ARMS = ("student (CE)", "CE + KD", "FSP (two-stage)", "CE + RKD", "CE + CRD", "CE + CRD, N = M")

BATCHES = (32, 64, 128, 256)
STUDENT_DIM, TEACHER_DIM = 16, 128
N_DATA = 1_000  # the shared protocol's training set: rows of CRD's memory banks


def _seconds(step, repeats: int = 20) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def _losses(batch: int, gen: torch.Generator):
    student_emb = torch.randn(batch, STUDENT_DIM, generator=gen, requires_grad=True)
    teacher_emb = torch.randn(batch, TEACHER_DIM, generator=gen)
    maps = [torch.randn(batch, c, 7, 7, generator=gen, requires_grad=True) for c in (8, 16)]
    teacher_maps = [torch.randn(batch, c, 7, 7, generator=gen) for c in (8, 16)]
    index = torch.randperm(N_DATA, generator=gen)[:batch]
    crd = {k: CRDLoss(STUDENT_DIM, TEACHER_DIM, N_DATA, n_negatives=k) for k in (256, 4096)}
    return {
        "cross-entropy (reference)": lambda: torch.nn.functional.cross_entropy(
            student_emb[:, :10], index % 10),
        "FSP (one 8×16 pair)": lambda: fsp_loss([tuple(maps)], [tuple(teacher_maps)]),
        "RKD distance": lambda: rkd_distance_loss(student_emb, teacher_emb),
        "RKD angle": lambda: rkd_angle_loss(student_emb, teacher_emb),
        "CRD, K = 256": lambda: crd[256](student_emb, teacher_emb, index),
        "CRD, K = 4096": lambda: crd[4096](student_emb, teacher_emb, index),
    }


def main() -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    table = {}
    for batch in BATCHES:
        for name, loss in _losses(batch, gen).items():
            table.setdefault(name, []).append(_seconds(lambda: loss().backward()))
    print(f"forward + backward, one thread, milliseconds (min of 20); batch sizes {list(BATCHES)}")
    for name, seconds in table.items():
        slope = np.polyfit(np.log(BATCHES), np.log(seconds), 1)[0]
        cells = " ".join(f"{1000 * s:8.3f}" for s in seconds)
        print(f"  {name:<26} {cells}   time ∝ B^{slope:.1f}")


if __name__ == "__main__":
    main()
    feature_methods.main(int(sys.argv[1]) if len(sys.argv) > 1 else 5, arms=ARMS,
                         protocols={"FSP (two-stage)": protocol.fsp_protocol()})
