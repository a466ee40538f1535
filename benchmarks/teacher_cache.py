"""Speed-up of ``cache_teacher_logits=True`` in kdtools.train.distill (a benchmark, not a test).

Distils a small CNN student from the zoo teacher on MNIST for three epochs with and without the cache
and prints the epoch times. Usage: ``python benchmarks/teacher_cache.py [n_per_class]``.
"""
import sys
import time

import torch

from kdtools import data, zoo
from kdtools.models import build_model
from kdtools.train import distill


def main(per_class: int = 1000) -> None:
    train = data.load_mnist(True)
    train = train.subset(data.stratified_subset(train.labels, per_class=per_class, seed=0))
    teacher = zoo.load("mnist-cnn-teacher")
    times = {}
    for cache in (False, True):
        torch.manual_seed(0)
        student = build_model("cnn-8x1")
        loader = data.TensorLoader(train, 128, shuffle=True, seed=0)
        start = time.perf_counter()
        distill(student, teacher, loader, None, epochs=3, device="cpu", progress=False, cache_teacher_logits=cache)
        times[cache] = time.perf_counter() - start
    print(f"{len(train)} images, student cnn-8x1, teacher mnist-cnn-teacher, {torch.get_num_threads()} threads")
    print(f"  teacher forward every step: {times[False]:.1f} s for 3 epochs")
    print(f"  cached teacher logits:      {times[True]:.1f} s for 3 epochs (including the one-off cache pass)")
    print(f"  speed-up: {times[False] / times[True]:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
