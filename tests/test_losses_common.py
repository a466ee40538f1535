"""Properties every loss of kdtools.losses must have: gradcheck in float64, teacher detached,
bfloat16 runs, CUDA runs (when a GPU is present), and the name registry."""
import copy

import pytest
import torch

import kdtools.losses as L

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _module_case(module, call):
    """A loss from a stateful module: each evaluation runs on a fresh copy of the same state."""
    def fn(s, t):
        return call(copy.deepcopy(module), s, t)
    return fn


def loss_cases(dtype=torch.float64, device="cpu"):
    """name → (fn(student, teacher) -> scalar, student input, teacher input)."""
    gen = torch.Generator().manual_seed(0)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

    target = torch.tensor([0, 2, 1, 2], device=device)
    fg_mask = (torch.rand(2, 4, 4, generator=gen) > 0.5).to(device)
    token_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], device=device)

    torch.manual_seed(0)
    crd = L.CRDLoss(6, 5, n_data=10, feat_dim=4, n_negatives=3).to(device=device, dtype=dtype)
    index = torch.tensor([1, 4, 7], device=device)
    contrast = torch.tensor([[1, 0, 2, 3], [4, 5, 6, 1], [7, 8, 9, 0]], device=device)
    crd(r(3, 6), r(3, 5), index, contrast)  # sets Z and touches the banks once
    queue = L.CRDQueueLoss(6, 5, feat_dim=4, queue_size=7).to(device=device, dtype=dtype)

    return {
        "kd": (lambda s, t: L.kd_loss(s, t), r(4, 3, scale=2), r(4, 3, scale=2)),
        "kd_none": (lambda s, t: L.kd_loss(s, t, 2.0, "none").sum(), r(4, 3), r(4, 3)),
        "dkd": (lambda s, t: L.dkd_loss(s, t, target), r(4, 3, scale=3), r(4, 3, scale=3)),
        "dkd_terms": (lambda s, t: sum(x.sum() for x in L.dkd_terms(s, t, target, 2.0)), r(4, 3), r(4, 3)),
        "dml": (lambda s, t: L.dml_loss(s, t, 2.0), r(4, 3), r(4, 3)),
        "hint": (lambda s, t: L.hint_loss(s, t), r(2, 3, 2, 2), r(2, 3, 2, 2)),
        "at_code": (lambda s, t: L.at_loss(s, t), r(2, 3, 4, 4), r(2, 5, 2, 2)),
        "at_paper": (lambda s, t: L.at_loss(s, t, mode="paper"), r(2, 3, 4, 4), r(2, 5, 4, 4)),
        "nst_poly": (lambda s, t: L.nst_loss(s, t, "poly"), r(2, 3, 3, 3), r(2, 4, 3, 3)),
        "nst_linear": (lambda s, t: L.nst_loss(s, t, "linear"), r(2, 3, 3, 3), r(2, 4, 3, 3)),
        "nst_gaussian": (lambda s, t: L.nst_loss(s, t, "gaussian"), r(2, 3, 3, 3), r(2, 4, 6, 6)),
        "fsp": (lambda s, t: L.fsp_loss([(s[:, :2], s[:, 2:])], [(t[:, :2], t[:, 2:])]), r(2, 5, 3, 3), r(2, 5, 3, 3)),
        "rkd_distance": (lambda s, t: L.rkd_distance_loss(s, t), r(5, 3, scale=2), r(5, 4)),
        "rkd_angle": (lambda s, t: L.rkd_angle_loss(s, t), r(5, 3), r(5, 4)),
        "rkd": (lambda s, t: L.rkd_loss(s, t), r(5, 3), r(5, 4)),
        "crd_nce": (lambda s, t: L.crd_nce_loss(s.exp(), n_data=50), r(3, 4), r(3, 4)),
        "crd_module": (_module_case(crd, lambda m, s, t: m(s, t, index, contrast)), r(3, 6), r(3, 5)),
        "crd_queue": (_module_case(queue, lambda m, s, t: m(s, t)), r(3, 6), r(3, 5)),
        "token_kd": (lambda s, t: L.token_kd_loss(s, t, token_mask, 2.0), r(2, 4, 3), r(2, 4, 3)),
        "ld": (lambda s, t: L.localization_distillation_loss(s, t), r(2, 4, 5, scale=3), r(2, 4, 5, scale=3)),
        "fg_feature": (lambda s, t: L.foreground_weighted_feature_loss(s, t, fg_mask, 2.0, 0.5), r(2, 3, 4, 4), r(2, 3, 4, 4)),
    }


CASE_NAMES = list(loss_cases())


@pytest.mark.parametrize("name", CASE_NAMES)
def test_gradcheck_float64(name):
    fn, s, t = loss_cases()[name]
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, t), (s,), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_teacher_receives_no_gradient(name):
    fn, s, t = loss_cases()[name]
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = fn(s, t)
    assert loss.dim() == 0
    loss.backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all()
    assert s.grad.abs().sum() > 0


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bfloat16_runs_and_is_finite(name):
    fn, s, t = loss_cases(dtype=torch.bfloat16)[name]
    s.requires_grad_(True)
    loss = fn(s, t)
    assert loss.dtype == torch.bfloat16
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_runs_on_device_and_matches_float64(name, device):
    """float32 on each device agrees with the float64 CPU value (no hard-coded device)."""
    fn64, s64, t64 = loss_cases()[name]
    fn32, s32, t32 = loss_cases(dtype=torch.float32, device=device)[name]
    value = fn32(s32, t32)
    assert value.device.type == device
    assert torch.allclose(value.double().cpu(), fn64(s64, t64), rtol=1e-4, atol=1e-5)


def test_registry_maps_names_to_the_exported_functions():
    expected = {
        "kd": L.kd_loss, "dkd": L.dkd_loss, "fitnets": L.hint_loss, "at": L.at_loss, "nst": L.nst_loss,
        "fsp": L.fsp_loss, "rkd_distance": L.rkd_distance_loss, "rkd_angle": L.rkd_angle_loss,
        "crd": L.crd_nce_loss, "dml": L.dml_loss, "token_kd": L.token_kd_loss,
        "ld": L.localization_distillation_loss, "pixelwise_kd": L.pixelwise_kd_loss,
    }
    for key, fn in expected.items():
        assert L.LOSSES[key] is fn
    assert L.LOSSES["rkd"] is L.rkd_loss
    assert L.LOSSES["fg_feature"] is L.foreground_weighted_feature_loss
    for name in L.__all__:
        assert hasattr(L, name), name


def test_every_public_loss_documents_equation_paper_and_code_differences():
    for name in L.__all__:
        obj = getattr(L, name)
        if not callable(obj):
            continue
        doc = obj.__doc__ or ""
        assert len(doc) > 80, name
    for fn in set(L.LOSSES.values()):
        doc = fn.__doc__
        assert ".. math::" in doc, fn.__name__
        assert any(str(year) in doc for year in range(2014, 2024)), fn.__name__


INPUT_SLOTS = [(name, which) for name in CASE_NAMES for which in ("student", "teacher")
               if not (name == "crd_nce" and which == "teacher")]  # crd_nce_loss has no teacher input


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("position", [0, -1])
@pytest.mark.parametrize("name,which", INPUT_SLOTS)
def test_non_finite_input_anywhere_raises_value_error(name, which, position, bad):
    """Finiteness is tested after the computation (a NaN/inf in any input reaches the result);
    whichever input and position holds it, the error must still be a ValueError naming it."""
    fn, s, t = loss_cases()[name]
    target = s if which == "student" else t
    target.view(-1)[position] = bad
    with pytest.raises(ValueError, match=r"contains non-finite values|scores must be positive"):
        fn(s, t)


def test_non_finite_value_in_masked_or_zero_weight_entries_is_still_rejected():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    s[0, 2, 1] = float("nan")  # a padded token
    with pytest.raises(ValueError, match="student_logits contains non-finite"):
        L.token_kd_loss(s, t, mask)
    e_s, e_t = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    e_t[1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="teacher_edge_logits contains non-finite"):
        L.localization_distillation_loss(e_s, e_t, weight=torch.tensor([1.0, 0.0]))
    f_s, f_t = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 2, 2)
    f_s[0, 0, 1, 1] = float("-inf")  # a background pixel with background weight 0
    with pytest.raises(ValueError, match="student_feat contains non-finite"):
        L.foreground_weighted_feature_loss(f_s, f_t, torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]), 1.0, 0.0)


def test_overflow_from_finite_inputs_is_returned_not_rejected():
    big = torch.full((1, 1, 2, 2), 3e38)
    value = L.hint_loss(big, -big)  # finite inputs, the squared difference overflows float32
    assert torch.isinf(value)
