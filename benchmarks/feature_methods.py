"""Cost of the feature-based arms on the shared protocol (a benchmark, not a test).

Trains the protocol's student for a few epochs with each registered arm (teacher features cached once per
run, as :func:`kdtools.protocol.run` does) and prints the seconds per epoch relative to cross-entropy alone
and the extra trainable parameters (regressors). Usage: ``python benchmarks/feature_methods.py [epochs]``.
The figures feed the table on the Module 3 page (book/03_feature.md).
"""
import sys
import time
from dataclasses import replace

import torch

from kdtools import protocol
from kdtools.protocol import METHODS, SHARED_PROTOCOL

ARMS = ("student (CE)", "CE + KD", "CE + hint", "CE + AT", "CE + NST")


def main(epochs: int = 5, arms=ARMS, protocols=None) -> None:
    """Seconds per epoch of each arm relative to the first (CE); ``protocols`` maps an arm to the protocol
    it needs when that is not the shared one (e.g. FSP's same-width teacher). A two-stage arm's first stage
    is included, so its figure is its whole run divided by the protocol's epochs."""
    torch.set_num_threads(1)  # as run_jobs trains every arm of a lesson
    shared = replace(SHARED_PROTOCOL, epochs=epochs)
    protocols = {arm: replace(p, epochs=epochs) for arm, p in (protocols or {}).items()}
    protocol.run("CE + KD", 0, shared)  # warm-up: data decoding, zoo teacher, caches
    print(f"{shared.student} on {shared.train_per_class * 10} images, {epochs} epochs, "
          f"{torch.get_num_threads()} thread")
    base = None
    for arm in arms:
        proto = protocols.get(arm, shared)
        spec = METHODS[arm](proto)
        extra = sum(p.numel() for m in spec.extra_modules for p in m.parameters() if p.requires_grad)
        start = time.perf_counter()
        protocol.run(arm, 0, proto)
        per_epoch = (time.perf_counter() - start) / epochs
        base = base or per_epoch
        print(f"  {arm:<22} {per_epoch:6.3f} s/epoch  {per_epoch / base:5.2f}x CE   extra parameters {extra}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
