"""Worker of tests/test_run.py: ``fit`` in float64 on a synthetic batch stream, in one process or as one rank of
``torchrun``; rank 0 saves the trained weights and the loss curve to ``sys.argv[1]``. ``sys.argv[2]``: "kd" (CE +
KD) or "crd" (CE + KD + CRD with its memory banks). 69 examples in global batches of 16: the last global batch (5)
splits 3 + 2 over two ranks, so the ranks' unequal shares are exercised too."""
import sys

import torch

from kdtools import distributed
from kdtools.data import TensorData, TensorLoader
from kdtools.losses import CRDLoss
from kdtools.models import build_model
from kdtools.protocol import crd_term, layer_shapes
from kdtools.runtime import seed_everything
from kdtools.train import cross_entropy_term, fit, kd_term


def main(out: str, method: str) -> None:
    launch = distributed.init_from_env("gloo")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    generator = torch.Generator().manual_seed(0)
    data = TensorData(torch.randn(69, 1, 28, 28, generator=generator), torch.randint(0, 10, (69,), generator=generator))
    seed_everything(0)
    teacher = build_model("cnn-8x1").eval()
    student = build_model("cnn-4x1")
    terms = {"ce": (1.0, cross_entropy_term), "kd": (1.0, kd_term(4.0))}
    extra, layers = [], ()
    if method == "crd":
        dims = [layer_shapes(m, ["embedding"])["embedding"][0] for m in (student, teacher)]
        crd = CRDLoss(*dims, n_data=69, feat_dim=8, n_negatives=20)
        terms["crd"] = (0.8, crd_term(crd, "embedding", "embedding"))
        extra, layers = [crd], ("embedding",)
    shard = (launch.rank, launch.world_size) if launch.distributed else None
    loader = TensorLoader(data, 16, shuffle=True, seed=0, shard=shard)
    history = fit(student, loader, epochs=2, terms=terms, teacher=teacher, student_layers=layers, teacher_layers=layers,
                  extra_modules=extra, distributed=True, progress=False, device="cpu", seed=0)
    if distributed.is_main():
        torch.save({"student": student.state_dict(), "extra": [m.state_dict() for m in extra],
                    "loss": history.train_loss, "terms": history.term_loss}, out)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
