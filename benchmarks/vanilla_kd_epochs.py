"""How the 2x800 MNIST students of the vanilla-KD notebook depend on the training budget.

The notebook re-runs a 3-epoch budget and loads 40-epoch runs from the zoo. This script trains the scratch and the
distilled (T = 20, alpha = 0.9) student with the zoo's recipes (``mnist-mlp-800x2-scratch-s*``,
``mnist-mlp-800x2-kd20-s*``) for any other budget, for seeds 0, 1 and 2, and prints test errors out of 10,000
(last and best epoch, mean ± sample std) and the fraction of the scratch-teacher gap closed, per seed.

Usage: ``python benchmarks/vanilla_kd_epochs.py [EPOCHS]`` (default 10; about 7 s per epoch per student on one
CPU thread).
"""
import statistics
import sys
import time

import torch

from kdtools import data, zoo
from kdtools.train import predict_logits

SEEDS = (0, 1, 2)
STUDENTS = {"scratch": "mnist-mlp-800x2-scratch", "distilled, T = 20": "mnist-mlp-800x2-kd20"}


def mean_std(values):
    return f"{statistics.fmean(values):6.1f} ± {statistics.stdev(values):4.1f}"


def main(epochs: int = 10) -> None:
    torch.set_num_threads(1)
    test_set = data.load_mnist(train=False)
    teacher = zoo.load("mnist-mlp-teacher")
    teacher_errors = int((predict_logits(teacher, data.TensorLoader(test_set, 1000)).argmax(1)
                          != test_set.labels).sum())
    last, best = {}, {}
    for method, prefix in STUDENTS.items():
        last[method], best[method] = [], []
        for seed in SEEDS:
            start = time.perf_counter()
            _, history = zoo.train_model(zoo.RECIPES[f"{prefix}-s{seed}"], epochs=epochs, progress=False)
            last[method].append(round(100 * (100 - history.last_acc)))
            best[method].append(round(100 * (100 - history.best_acc)))
            print(f"{method:<18} seed {seed}, {epochs} epochs: {last[method][-1]} errors (best epoch "
                  f"{best[method][-1]}), {time.perf_counter() - start:.0f} s", flush=True)
    print(f"teacher: {teacher_errors} errors")
    for method in STUDENTS:
        print(f"{method:<18} last epoch {mean_std(last[method])}, best epoch {mean_std(best[method])}")
    gaps = [100 * (s - k) / (s - teacher_errors) for s, k in zip(last["scratch"], last["distilled, T = 20"])]
    print(f"gap closed (last epoch, per seed): {', '.join(f'{g:.0f} %' for g in gaps)}; "
          f"mean {mean_std(gaps)} %")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
