"""How the 2x800 MNIST student of the vanilla-KD notebook depends on the training budget.

The notebook trains each student for 15 epochs (its 10-minute budget). This script repeats the scratch
and distilled (T = 20 and T = 4, alpha = 0.9) students with a longer schedule, same recipe otherwise,
and prints test errors out of 10,000 and the fraction of the scratch-teacher gap closed.

Usage: ``python benchmarks/vanilla_kd_epochs.py [EPOCHS]`` (default 60; about 4-5 s per epoch per student on 2 CPU cores).
"""
import sys
import time

import kdtools
from kdtools import data, zoo
from kdtools.models import build_model
from kdtools.train import distill, predict_logits, train


def main(epochs: int = 60) -> None:
    teacher = zoo.load("mnist-mlp-teacher")
    train_set, test_set = data.load_mnist(train=True), data.load_mnist(train=False)
    test_loader = data.TensorLoader(test_set, batch_size=1000)
    teacher_errors = int((predict_logits(teacher, test_loader).argmax(1) != test_set.labels).sum())
    recipe = dict(epochs=epochs, lr=0.02, weight_decay=0.0, schedule="cosine", progress=False, seed=0)
    errors = {}
    for name, temperature in (("scratch", None), ("distilled, T = 20", 20.0), ("distilled, T = 4", 4.0)):
        kdtools.seed_everything(0)
        student = build_model("mlp-800x2")
        loader = data.TensorLoader(train_set, batch_size=128, shuffle=True, seed=0)
        start = time.perf_counter()
        if temperature is None:
            history = train(student, loader, test_loader, **recipe)
        else:
            history = distill(student, teacher, loader, test_loader, alpha=0.9, temperature=temperature,
                              cache_teacher_logits=True, **recipe)
        errors[name] = round((100 - history.last_acc) * 100)
        best = round((100 - history.best_acc) * 100)
        print(f"{name:<18} {epochs} epochs: {errors[name]} errors (best epoch {best}), "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    for name in ("distilled, T = 20", "distilled, T = 4"):
        gap = (errors["scratch"] - errors[name]) / (errors["scratch"] - teacher_errors)
        print(f"gap closed, {name}: {gap:.0%} (teacher {teacher_errors} errors)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
