"""The NST lesson's protocol additions: the validation split carved from the training subset, the
validation run that trains on the rest, and the NST arm factory."""
import pytest
import torch

from kdtools import protocol
from kdtools.losses import nst_loss
from kdtools.protocol import METHODS, Protocol

TINY = Protocol(train_per_class=5, epochs=2, seeds=(0, 1), test_per_class=20)


def test_validation_split_holds_out_a_stratified_part_of_the_training_subset():
    fit_part, validation = protocol.validation_split(TINY, val_per_class=2)
    train, test = protocol._protocol_data(TINY.train_per_class, TINY.data_seed, TINY.test_per_class)
    assert len(fit_part) == 30 and len(validation) == 20
    assert torch.bincount(validation.labels, minlength=10).tolist() == [2] * 10
    assert torch.bincount(fit_part.labels, minlength=10).tolist() == [3] * 10

    def rows(images):
        return {tuple(image.flatten().tolist()) for image in images}

    # the two parts are disjoint and together are the training subset; no test image is used
    assert not rows(fit_part.images) & rows(validation.images)
    assert rows(fit_part.images) | rows(validation.images) == rows(train.images)
    assert not rows(validation.images) & rows(test.images)
    again, _ = protocol.validation_split(TINY, val_per_class=2)
    assert torch.equal(again.labels, fit_part.labels) and torch.equal(again.images, fit_part.images)


def test_validation_split_defaults_to_a_fifth_and_validates():
    _, validation = protocol.validation_split(Protocol(train_per_class=10))
    assert len(validation) == 20  # 10 per class // 5 = 2 per class
    with pytest.raises(ValueError, match="val_per_class must be < train_per_class = 5, got 5"):
        protocol.validation_split(TINY, val_per_class=5)
    with pytest.raises(ValueError, match="val_per_class"):
        protocol.validation_split(TINY, val_per_class=0)


def test_run_validation_reports_accuracy_on_the_held_out_images():
    history = protocol.run_validation("student (CE)", 0, TINY, val_per_class=2)
    assert history.epochs == 2
    # accuracies on 20 images are multiples of 5 %
    assert all(abs(acc / 5 - round(acc / 5)) < 1e-9 for acc in history.test_acc)
    assert protocol.run_validation("student (CE)", 0, TINY, val_per_class=2).test_acc == history.test_acc


def test_nst_arms_sum_the_chosen_kernel_over_the_three_stages():
    method = protocol.nst_method(3.0, "gaussian", kd_weight=1.0)(TINY)
    assert set(method.terms) == {"ce", "nst", "kd"} and method.terms["nst"][0] == 3.0
    assert method.student_layers == ("stage1", "stage2", "stage3")
    torch.manual_seed(0)
    s = {name: torch.rand(2, c, 7, 7) for name, c in (("stage1", 4), ("stage2", 8), ("stage3", 16))}
    t = {name: torch.rand(2, 8 * c, 7, 7) for name, c in (("stage1", 4), ("stage2", 8), ("stage3", 16))}
    step = protocol.Step(torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.arange(2), torch.zeros(2, 10),
                         None, s, t)
    expected = sum(nst_loss(s[name], t[name], kernel="gaussian") for name in s)
    torch.testing.assert_close(method.terms["nst"][1](step), expected)
    authors = METHODS["CE + NST"](TINY)
    assert authors.terms["nst"][0] == protocol.NST_AUTHORS_WEIGHT == 50.0


def _mean_normalised_map(feat):
    return torch.nn.functional.normalize(feat.flatten(2), dim=2).mean(dim=1)


def _position_gram(feat):
    unit = torch.nn.functional.normalize(feat.flatten(2), dim=2)
    return unit.transpose(1, 2) @ unit / unit.shape[1]


def test_the_lessons_identities_hold_per_image():
    # the lesson's claims: linear-kernel MMD² = |a_s − a_t|² with a the mean of the channel-normalised maps
    # (attention transfer with p = 1, channels normalised first, map not normalised, squared distance summed
    # over positions); polynomial-kernel MMD² = |G_s − G_t|²_F with G the mean of f̂ f̂ᵀ over channels
    gen = torch.Generator().manual_seed(3)
    s = torch.randn(3, 4, 5, 6, generator=gen, dtype=torch.float64).relu()
    t = torch.randn(3, 9, 5, 6, generator=gen, dtype=torch.float64).relu()
    for i in range(3):
        linear = nst_loss(s[i:i + 1], t[i:i + 1], kernel="linear")
        expected = (_mean_normalised_map(s[i:i + 1]) - _mean_normalised_map(t[i:i + 1])).pow(2).sum()
        torch.testing.assert_close(linear, expected)
        poly = nst_loss(s[i:i + 1], t[i:i + 1], kernel="poly")
        torch.testing.assert_close(poly, (_position_gram(s[i:i + 1]) - _position_gram(t[i:i + 1])).pow(2).sum())
    # a hand-computed case: one channel each, maps e1 and (e1 + e2)/√2 -> linear MMD² = |e1 − (e1+e2)/√2|²
    a = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 1, 1, 2)
    b = torch.tensor([1.0, 1.0], dtype=torch.float64).view(1, 1, 1, 2)
    torch.testing.assert_close(nst_loss(a, b, kernel="linear"), torch.tensor(2 - 2 ** 0.5, dtype=torch.float64))
    torch.testing.assert_close(nst_loss(a, b, kernel="poly"), torch.tensor(1.0, dtype=torch.float64))  # 1 + 1 − 2·½


def test_nst_ignores_the_order_and_the_scale_of_the_channels():
    gen = torch.Generator().manual_seed(4)
    s = torch.randn(2, 5, 4, 4, generator=gen).relu()
    t = torch.randn(2, 7, 4, 4, generator=gen).relu()
    scaled = s[:, [3, 0, 4, 1, 2]] * torch.tensor([0.2, 1.0, 3.0, 7.0, 0.5]).view(1, -1, 1, 1)
    for kernel in ("linear", "poly", "gaussian"):
        torch.testing.assert_close(nst_loss(scaled, t, kernel=kernel), nst_loss(s, t, kernel=kernel))


@pytest.mark.parametrize("kernel", ["poly", "linear", "gaussian"])
def test_nst_term_with_cached_teacher_parts_equals_nst_loss(kernel):
    gen = torch.Generator().manual_seed(5)
    pairs = [("a", "a"), ("b", "b"), ("c", "c")]
    teacher = {"a": torch.rand(10, 12, 6, 6, generator=gen, dtype=torch.float64),
               "b": torch.rand(10, 16, 3, 3, generator=gen, dtype=torch.float64),
               "c": torch.rand(10, 8, 4, 4, generator=gen, dtype=torch.float64)}
    term = protocol.nst_term(pairs, kernel)
    # two passes over the data in different batches: the second pass reads the cache
    for index in (torch.tensor([3, 1, 7, 0]), torch.tensor([9, 2]), torch.tensor([1, 3, 9, 5]), torch.arange(10)):
        student = {"a": torch.rand(len(index), 3, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True),
                   "b": torch.rand(len(index), 4, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True),
                   "c": torch.rand(len(index), 2, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)}
        step = protocol.Step(torch.zeros(len(index)), torch.zeros(len(index), dtype=torch.long), index,
                             torch.zeros(len(index), 10), None, student, {n: f[index] for n, f in teacher.items()})
        got = term(step)
        # "c" has different spatial sizes (2×2 against 4×4): that pair goes through nst_loss itself
        expected = sum(nst_loss(student[n], teacher[n][index], kernel=kernel) for n, _ in pairs)
        torch.testing.assert_close(got, expected)
        grads = torch.autograd.grad(got, list(student.values()))
        expected_grads = torch.autograd.grad(expected, list(student.values()))
        for g, e in zip(grads, expected_grads):
            torch.testing.assert_close(g, e)


def test_nst_arms_validate_the_kernel_early():
    with pytest.raises(ValueError, match="kernel"):
        protocol.nst_method(1.0, "cubic")


def test_nst_arm_is_picklable_and_runs_in_worker_processes():
    import pickle

    arm = protocol.NSTArm(0.5, "linear", kd_weight=1.0)
    assert pickle.loads(pickle.dumps(arm)) == arm
    method = arm(TINY)
    assert set(method.terms) == {"ce", "nst", "kd"} and method.terms["nst"][0] == 0.5
    with pytest.raises(ValueError, match="kernel"):
        protocol.NSTArm(1.0, "cubic")
    jobs = [(arm, 0, TINY), ("student (CE)", 1, TINY)]
    here = protocol.run_validation_jobs(jobs, workers=1)
    there = protocol.run_validation_jobs(jobs, workers=2)
    assert [h.test_acc for h in here] == [h.test_acc for h in there]
    assert [h.test_acc for h, _ in protocol.run_jobs(jobs, workers=2)] == \
        [protocol.run(m, seed, TINY).test_acc for m, seed, _ in jobs]
