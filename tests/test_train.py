import re

import pytest
import torch

from kdtools.data import TensorData, TensorLoader, random_shift, stratified_subset
from kdtools.models import MLP, SmallCNN
from kdtools.train import (History, NonFiniteLossError, Step, cross_entropy_term, distill, evaluate, fit, kd_term,
                           predict_logits, train)


@pytest.fixture(scope="module")
def small_mnist(mnist):
    train_set, test_set = mnist
    return (train_set.subset(stratified_subset(train_set.labels, per_class=100, seed=0)),
            test_set.subset(stratified_subset(test_set.labels, per_class=50, seed=0)))


def loaders(small_mnist, seed=0, augment=None):
    tr, te = small_mnist
    return TensorLoader(tr, 50, shuffle=True, seed=seed, augment=augment), TensorLoader(te, 500)


def test_student_beats_chance_after_one_short_epoch(small_mnist):
    torch.manual_seed(0)
    model = MLP((64,))
    history = train(model, *loaders(small_mnist), epochs=1, lr=0.05, device="cpu", progress=False)
    assert history.epochs == 1 and history.last_acc > 50.0  # chance is 10 %
    assert history.term_loss["ce"][0] == pytest.approx(history.train_loss[0])


def test_same_seed_gives_identical_weights(small_mnist):
    def run():
        torch.manual_seed(1)
        model = SmallCNN(4, 1, dropout=0.1)
        train(model, *loaders(small_mnist, seed=3, augment=random_shift(2)), epochs=1, device="cpu",
              progress=False, seed=11)
        return model.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_distill_uses_a_frozen_teacher_in_eval_mode(small_mnist):
    torch.manual_seed(0)
    teacher = MLP((64,), dropout=0.5)
    train(teacher, *loaders(small_mnist), epochs=1, device="cpu", progress=False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.zero_grad(set_to_none=True)
    teacher.train()  # distill must switch it to eval (dropout off) itself
    modes = []
    teacher.register_forward_hook(lambda m, i, o: modes.append(m.training))
    student = MLP((32,))
    history = distill(student, teacher, *loaders(small_mnist), epochs=1, alpha=0.9, temperature=4.0,
                      device="cpu", progress=False)
    assert modes and not any(modes)
    assert all(torch.equal(before[k], teacher.state_dict()[k]) for k in before)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.requires_grad for p in teacher.parameters())  # the caller's teacher is not modified
    assert set(history.term_loss) == {"ce", "kd"} and history.last_acc > 30.0


def test_cached_teacher_logits_give_the_same_training(small_mnist):
    torch.manual_seed(0)
    teacher = MLP((64,))
    train(teacher, *loaders(small_mnist), epochs=1, device="cpu", progress=False)

    def run(cache):
        torch.manual_seed(2)
        student = MLP((32,))
        h = distill(student, teacher, *loaders(small_mnist), epochs=2, device="cpu", progress=False,
                    cache_teacher_logits=cache)
        return student.state_dict(), h

    (a, ha), (b, hb) = run(False), run(True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert ha.test_acc == pytest.approx(hb.test_acc, abs=0.5)


def test_cache_refuses_augmented_data(small_mnist):
    teacher, student = MLP((8,)), MLP((8,))
    train_loader, test_loader = loaders(small_mnist, augment=random_shift(1))
    with pytest.raises(ValueError, match="un-augmented data"):
        distill(student, teacher, train_loader, test_loader, epochs=1, cache_teacher_logits=True,
                device="cpu", progress=False)


def test_feature_terms_and_epoch_dependent_weights(small_mnist):
    teacher, student = SmallCNN(8, 1), SmallCNN(4, 1)
    weights_seen = []

    def feature_term(step: Step):
        s, t = step.student_features["stage3"], step.teacher_features["stage3"]
        assert not t.requires_grad and s.requires_grad
        return (s.pow(2).mean((1, 2, 3)) - t.pow(2).mean((1, 2, 3))).pow(2).mean()

    def warmup(epoch):
        weights_seen.append(epoch)
        return min(1.0, (epoch + 1) / 2)

    history = distill(student, teacher, *loaders(small_mnist), epochs=2, device="cpu", progress=False,
                      terms={"ce": cross_entropy_term, "feat": (warmup, feature_term)},
                      student_layers=["stage3"], teacher_layers=["stage3"])
    assert weights_seen == [0, 1] and len(history.term_loss["feat"]) == 2
    assert len(student.stage3._forward_hooks) == 0 and len(teacher.stage3._forward_hooks) == 0


def test_cached_teacher_features_give_the_same_training(small_mnist):
    torch.manual_seed(0)
    teacher = SmallCNN(8, 1)
    train(teacher, *loaders(small_mnist), epochs=1, device="cpu", progress=False)
    seen_shapes = []

    def feature_term(step: Step):
        s, t = step.student_features["stage2"], step.teacher_features["stage2"]
        seen_shapes.append(tuple(t.shape))
        assert not t.requires_grad
        return (s.pow(2).mean(1) - t.pow(2).mean(1)).pow(2).mean()

    def run(cache):
        torch.manual_seed(2)
        student = SmallCNN(4, 1)
        fit(student, *loaders(small_mnist), epochs=2, device="cpu", progress=False, teacher=teacher,
            terms={"ce": cross_entropy_term, "feat": feature_term, "kd": kd_term(4.0)},
            student_layers=["stage2"], teacher_layers=["stage2"], cache_teacher_logits=cache)
        return student.state_dict()

    a, b = run(False), run(True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert seen_shapes and seen_shapes[-1][1:] == (16, 7, 7)
    assert len(teacher.stage2._forward_hooks) == 0


def test_extra_modules_are_optimised(small_mnist):
    student = MLP((16,))
    head = torch.nn.Linear(10, 10)
    before = head.weight.clone()
    fit(student, *loaders(small_mnist), epochs=1, device="cpu", progress=False, extra_modules=[head],
        terms={"ce": lambda s: torch.nn.functional.cross_entropy(head(s.student_logits), s.labels)})
    assert not torch.equal(before, head.weight)


def test_max_norm_caps_every_units_incoming_weights(small_mnist):
    model = MLP((16,))
    with torch.no_grad():
        model.net.fc1.weight.mul_(10.0)  # start far outside the constraint
    fit(model, *loaders(small_mnist), epochs=1, lr=0.1, max_norm=0.5, device="cpu", progress=False)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2
    for layer in linears:
        row_norms = layer.weight.norm(dim=1)
        assert row_norms.max().item() <= 0.5 + 1e-5
        assert row_norms.max().item() > 0.45  # the constraint binds, it does not shrink everything
    # without it the same training leaves the first layer's rows well above 0.5
    free = MLP((16,))
    with torch.no_grad():
        free.net.fc1.weight.mul_(10.0)
    fit(free, *loaders(small_mnist), epochs=1, lr=0.1, device="cpu", progress=False)
    assert free.net.fc1.weight.norm(dim=1).max().item() > 1.0


def test_history_last_and_best():
    h = History(train_loss=[1, 0.5, 0.4], test_acc=[90.0, 95.0, 94.0])
    assert (h.last_acc, h.best_acc, h.best_epoch, h.epochs) == (94.0, 95.0, 2, 3)
    assert h.to_dict()["best_epoch"] == 2


def test_evaluate_and_predict_logits_agree(small_mnist):
    model = MLP((16,))
    _, test_loader = loaders(small_mnist)
    logits = predict_logits(model, test_loader)
    labels = torch.cat([y for _, y, _ in test_loader])
    assert evaluate(model, test_loader) == pytest.approx(100.0 * (logits.argmax(1) == labels).float().mean().item())


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"epochs": 1, "optimizer": "lion"}, "unknown optimizer 'lion'"),
    ({"epochs": 1, "schedule": "wavy"}, "unknown schedule 'wavy'"),
    ({"epochs": 1, "terms": {"x": 3}}, r"terms\['x'\] must be a callable"),
    ({"epochs": 1, "teacher_layers": ["fc1"]}, "no teacher"),
    ({"epochs": 1, "max_norm": 0.0}, "max_norm must be a positive number"),
    ({"epochs": 1, "max_norm": -2.0}, r"got -2\.0"),
])
def test_bad_options(small_mnist, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(MLP((8,)), *loaders(small_mnist), device="cpu", progress=False, **kwargs)


def test_kd_term_without_teacher_is_explained():
    step = Step(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), torch.arange(2), torch.zeros(2, 10))
    with pytest.raises(ValueError, match="needs a teacher"):
        kd_term(4.0)(step)


def _toy_loaders(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    toy = TensorData(torch.randn(n, 1, 28, 28, generator=gen), torch.arange(n) % 10)
    return TensorLoader(toy, 10, shuffle=True, seed=seed), TensorLoader(toy, 20)


def test_a_nan_term_stops_training_at_its_step_with_every_terms_value():
    model = MLP((8,))
    calls = []

    def breaks_on_step_3(step: Step):
        calls.append(step.epoch)
        return torch.tensor(float("nan")) if len(calls) == 7 else step.student_logits.sum() * 0.0

    before = None

    def snapshot(step: Step):
        nonlocal before
        before = {k: v.clone() for k, v in model.state_dict().items()}
        return torch.zeros(())

    with pytest.raises(NonFiniteLossError) as err:
        fit(model, *_toy_loaders(), epochs=3, device="cpu", progress=False,
            terms={"ce": cross_entropy_term, "snapshot": snapshot, "bad": (0.5, breaks_on_step_3)})
    message = str(err.value)
    assert isinstance(err.value, FloatingPointError)
    # 4 steps per epoch: call 7 is epoch 2, step 3
    assert "loss is nan at epoch 2, step 3 of 4" in message
    assert "bad = nan (weight 0.5)" in message and "snapshot = 0 (weight 1)" in message
    assert "The term(s) bad returned a non-finite value" in message
    assert re.search(r"ce = \d+\.\d+ \(weight 1\)", message)
    # the nan step did not touch the weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_diverging_learning_rate_stops_with_the_learning_rate_named(small_mnist):
    torch.manual_seed(0)
    with pytest.raises(NonFiniteLossError,
                       match=r"at epoch 1, step \d+ of 20\n  terms: ce = (nan|inf)(.|\n)*lr is 10000"):
        train(MLP((64,)), *loaders(small_mnist), epochs=2, lr=1e4, device="cpu", progress=False)


def test_evaluation_in_chunks_matches_one_forward_pass():
    from kdtools.train import EVAL_CHUNK, forward_in_chunks

    torch.manual_seed(0)
    model = SmallCNN(4, 1).eval()
    images = torch.randn(3 * EVAL_CHUNK + 5, 1, 28, 28)
    with torch.no_grad():
        whole, chunked = model(images), forward_in_chunks(model, images)
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    labels = whole.argmax(1)
    loader = TensorLoader(TensorData(images, labels), batch_size=len(images))
    torch.testing.assert_close(predict_logits(model, loader), whole, rtol=1e-5, atol=1e-5)
    assert evaluate(model, loader) == 100.0


def test_teacher_cache_is_shared_by_runs_with_the_same_teacher_and_data(small_mnist, monkeypatch):
    import kdtools.train as train_module

    calls = []
    real = train_module._teacher_cache
    monkeypatch.setattr(train_module, "_teacher_cache", lambda *a: calls.append(1) or real(*a))
    teacher = SmallCNN(4, 1)
    for _ in range(2):
        fit(SmallCNN(4, 1), *loaders(small_mnist), epochs=1, teacher=teacher, device="cpu", progress=False,
            terms={"ce": cross_entropy_term, "kd": kd_term(4.0)}, cache_teacher_logits=True)
    assert len(calls) == 1
    with torch.no_grad():  # new teacher weights: a new cache
        teacher.head.bias.add_(1.0)
    fit(SmallCNN(4, 1), *loaders(small_mnist), epochs=1, teacher=teacher, device="cpu", progress=False,
        terms={"ce": cross_entropy_term, "kd": kd_term(4.0)}, cache_teacher_logits=True)
    assert len(calls) == 2
