"""Seconds per CIFAR-100 step and epoch of the benchmark pair, ResNet32x4 -> ResNet8x4 (a benchmark, not a test).

Times the steps ``kdtools.train.fit`` takes in ``python -m kdtools.run --dataset cifar100`` (the CRD recipe: batches
of 64, SGD with classical momentum) on random CIFAR-shaped batches: CE (the student alone) and KD (plus the
teacher's forward pass, since augmentation forbids caching its logits), then scales them to an epoch (782 steps of
the 50,000 images) and to the 240-epoch recipe. Evaluation and data augmentation are not included.

Usage: ``python benchmarks/cifar_epoch_time.py [--device cuda] [--steps 20] [--threads N]``.
"""
import argparse
import time

import torch
import torch.nn.functional as F

from kdtools.losses import kd_loss
from kdtools.models import build_model
from kdtools.recipes import CRD_CIFAR100


def seconds_per_step(device: str, steps: int, with_teacher: bool) -> float:
    torch.manual_seed(0)
    student = build_model(CRD_CIFAR100.student).to(device).train()
    teacher = build_model(CRD_CIFAR100.teacher).to(device).eval() if with_teacher else None
    opt = torch.optim.SGD(student.parameters(), lr=CRD_CIFAR100.lr, momentum=CRD_CIFAR100.momentum,
                          weight_decay=CRD_CIFAR100.weight_decay)
    images = torch.randn(CRD_CIFAR100.batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 100, (CRD_CIFAR100.batch_size,), device=device)

    def step():
        logits = student(images)
        loss = F.cross_entropy(logits, labels)
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(images)
            loss = 0.1 * loss + 0.9 * kd_loss(logits, teacher_logits, temperature=4.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: allocator, kernels
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps_per_epoch = -(-50_000 // CRD_CIFAR100.batch_size)
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, batch "
          f"{CRD_CIFAR100.batch_size}, {steps_per_epoch} steps per epoch, {CRD_CIFAR100.epochs} epochs")
    for name, with_teacher in (("CE (student alone)", False), ("KD (+ teacher forward)", True)):
        step = seconds_per_step(args.device, args.steps, with_teacher)
        epoch = step * steps_per_epoch
        print(f"  {name:24s} {step * 1000:8.1f} ms/step  {epoch / 60:7.1f} min/epoch  "
              f"{epoch * CRD_CIFAR100.epochs / 3600:7.1f} h for the recipe")


if __name__ == "__main__":
    main()
