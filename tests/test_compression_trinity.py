"""kdtools.applications.compression_trinity: pruning, shrinking, int8 quantisation, file sizes, fine-tuning."""
import copy

import pytest
import torch
from torch import nn

from kdtools.applications import compression_trinity as ct
from kdtools.data import TensorData, TensorLoader
from kdtools.models import MLP


def _mlp(seed=0, hidden=(16, 12), in_features=20):
    torch.manual_seed(seed)
    return MLP(hidden=hidden, in_features=in_features).eval()


def _inputs(n=64, features=20, seed=1):
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed))


def test_magnitude_prune_zeroes_exactly_the_smallest_weights_across_layers():
    model = _mlp()
    weights = torch.cat([m.weight.detach().flatten().abs() for _, m in ct.linear_layers(model)])
    biases = [m.bias.detach().clone() for _, m in ct.linear_layers(model)]
    ct.magnitude_prune(model, 0.75)
    kept = torch.cat([m.weight.detach().flatten() for _, m in ct.linear_layers(model)])
    n_pruned = round(0.75 * weights.numel())
    assert int((kept == 0).sum()) == n_pruned
    assert ct.weight_sparsity(model) == pytest.approx(n_pruned / weights.numel())
    # one global threshold: every surviving weight is at least as large as every pruned one
    assert weights[kept != 0].min() >= weights[kept == 0].max()
    # the layers are pruned unequally (global ranking), and biases are untouched
    per_layer = [float((m.weight == 0).float().mean()) for _, m in ct.linear_layers(model)]
    assert max(per_layer) - min(per_layer) > 0.01
    for (_, m), b in zip(ct.linear_layers(model), biases):
        assert torch.equal(m.bias.detach(), b)


def test_make_permanent_leaves_plain_weights_with_the_same_function():
    model = ct.magnitude_prune(_mlp(), 0.5)
    x = _inputs()
    before = model(x)
    ct.make_permanent(model)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    assert torch.equal(model(x), before)
    assert ct.weight_sparsity(model) == pytest.approx(0.5, abs=1e-3)


def test_neuron_prune_removes_whole_neurons_and_shrink_keeps_the_function():
    model = ct.neuron_prune(_mlp(hidden=(16, 12)), 0.5)
    for (name, layer), width in zip(ct.linear_layers(model)[:2], (16, 12)):
        dead = (layer.weight == 0).all(dim=1)
        assert int(dead.sum()) == width // 2, name
        assert torch.all(layer.bias[dead] == 0), f"{name}: a pruned neuron's bias must be pruned too"
    # the output layer keeps its ten units
    head = ct.linear_layers(model)[-1][1]
    assert not bool((head.weight == 0).all(dim=1).any())
    x = _inputs()
    with pytest.raises(ValueError, match="make_permanent"):
        ct.shrink_mlp(model)
    ct.make_permanent(model)
    small = ct.shrink_mlp(model)
    assert small.hidden == (8, 6)
    torch.testing.assert_close(small(x), model(x), rtol=0, atol=1e-6)
    assert ct.file_bytes(small) < ct.file_bytes(model)


def test_neuron_prune_ranks_neurons_by_the_l2_norm_of_their_incoming_weights():
    model = _mlp(hidden=(8, 8))
    norms = model.net.fc1.weight.detach().norm(dim=1)
    ct.neuron_prune(model, 0.25)
    dead = (model.net.fc1.weight == 0).all(dim=1)
    assert set(dead.nonzero().flatten().tolist()) == set(norms.argsort()[:2].tolist())


def test_shrink_mlp_without_pruned_neurons_is_the_same_network():
    model = _mlp()
    small = ct.shrink_mlp(model)
    assert small.hidden == model.hidden
    torch.testing.assert_close(small(_inputs()), model(_inputs()), rtol=0, atol=0)


def test_symmetric_int8_by_hand():
    weight = torch.tensor([[0.5, -1.27, 0.004], [0.0, 0.0, 0.0], [2.54, 1.0, -0.3]])
    q, scale = ct.symmetric_int8(weight)
    torch.testing.assert_close(scale, torch.tensor([0.01, 1.0, 0.02]))
    assert q.dtype == torch.int8
    assert q.tolist() == [[50, -127, 0], [0, 0, 0], [127, 50, -15]]
    error = (q.float() * scale[:, None] - weight).abs()
    assert torch.all(error <= scale[:, None] / 2 + 1e-7)


def test_static_int8_uses_per_channel_scales_of_max_over_127_5():
    model = _mlp()
    quantized = ct.quantize_static_int8(model, _inputs(256))
    packed = quantized.module.net.fc1.weight()
    expected = model.net.fc1.weight.detach().abs().amax(dim=1) / 127.5
    torch.testing.assert_close(packed.q_per_channel_scales().float(), expected, rtol=1e-5, atol=0)
    x = _inputs(32, seed=5)
    reference = model(x)
    got = quantized(x)
    assert got.dtype == torch.float32 and got.shape == reference.shape
    assert (got - reference).abs().max() < 0.05 * reference.abs().max()


def test_dynamic_int8_is_close_and_a_quarter_of_the_file():
    torch.manual_seed(0)
    model = MLP(hidden=(256, 256), in_features=64).eval()
    quantized = ct.quantize_dynamic_int8(model)
    x = _inputs(16, 64)
    assert (quantized(x) - model(x)).abs().max() < 0.05 * model(x).abs().max()
    ratio = ct.file_bytes(quantized) / ct.file_bytes(model)
    assert 0.2 < ratio < 0.35
    # the original is untouched
    assert isinstance(model.net.fc1, nn.Linear)


def test_quantisation_keeps_pruned_weights_at_zero():
    model = ct.make_permanent(ct.magnitude_prune(_mlp(), 0.8))
    for quantized in (ct.quantize_dynamic_int8(model), ct.quantize_static_int8(model, _inputs(128))):
        assert ct.weight_sparsity(quantized) >= ct.weight_sparsity(model)


def test_file_bytes_counts_a_masked_model_once_and_gzip_finds_the_zeros():
    torch.manual_seed(0)
    model = MLP(hidden=(128, 128), in_features=64)
    dense = ct.file_bytes(model)
    pruned = ct.magnitude_prune(copy.deepcopy(model), 0.9)
    assert ct.file_bytes(pruned) == pytest.approx(dense, rel=0.02)  # masks not counted; zeros still stored
    assert ct.file_bytes(pruned, compress=True) < 0.4 * ct.file_bytes(model, compress=True)


def _tiny_data(n=96, features=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return TensorData(torch.randn(n, features, generator=gen), torch.randint(0, 10, (n,), generator=gen))


def _tiny_loader(n=96, features=20, seed=0):
    return TensorLoader(_tiny_data(n, features, seed), batch_size=32)


@pytest.mark.parametrize("objective", ["ce", "kd"])
def test_finetune_keeps_the_pruning_masks_and_the_best_epoch(objective):
    model = ct.magnitude_prune(_mlp(), 0.7)
    zero_before = [(m.weight == 0).clone() for _, m in ct.linear_layers(model)]
    history = ct.finetune(model, _tiny_data(), _tiny_data(seed=1), objective=objective, teacher=_mlp(seed=3),
                          epochs=3, lr=0.05)
    assert len(history["valid_accuracy"]) == 3 and 1 <= history["best_epoch"] <= 3
    assert history["valid_accuracy"][history["best_epoch"] - 1] == max(history["valid_accuracy"])
    for (_, m), zero in zip(ct.linear_layers(model), zero_before):
        assert torch.equal(m.weight == 0, zero)
    assert all(not torch.equal(m.weight_orig, m.weight) for _, m in ct.linear_layers(model))
    # the best epoch's state loads back into the pruned model
    model.load_state_dict(history["best_state"])


def test_finetune_kd_with_alpha_0_is_plain_ce():
    runs = []
    for objective in ("ce", "kd"):
        model = _mlp()
        ct.finetune(model, _tiny_data(), objective=objective, teacher=_mlp(seed=3), epochs=1, alpha=0.0)
        runs.append(model.state_dict())
    for key in runs[0]:
        torch.testing.assert_close(runs[0][key], runs[1][key])


def test_finetune_split_is_disjoint_balanced_and_deterministic():
    labels = torch.arange(10).repeat(30)
    train, valid = ct.finetune_split(labels, 12, 5, seed=4)
    assert len(set(train.tolist()) & set(valid.tolist())) == 0
    assert torch.bincount(labels[train]).tolist() == [12] * 10
    assert torch.bincount(labels[valid]).tolist() == [5] * 10
    again = ct.finetune_split(labels, 12, 5, seed=4)
    assert torch.equal(train, again[0]) and torch.equal(valid, again[1])


def test_measure_reports_every_figure():
    loader = _tiny_loader(features=784)
    torch.manual_seed(0)
    model = MLP(hidden=(32,)).eval()
    row = ct.measure(model, loader, batch_sizes=(1, 4), repeats=3)
    assert set(row) == {"accuracy", "sparsity", "bytes", "latency_b1_ms", "latency_b4_ms"}
    assert ct.measure(model, loader, batch_sizes=(), gzip_size=True)["gzip_bytes"] < row["bytes"]
    assert 0 <= row["accuracy"] <= 100 and row["bytes"] > 4 * 784 * 32
    assert all(row[k] > 0 for k in ("latency_b1_ms", "latency_b4_ms"))


def test_interleaved_latency_times_every_model():
    small, large = MLP(hidden=(8,)).eval(), MLP(hidden=(2048, 2048)).eval()
    ms = ct.interleaved_latency_ms({"small": small, "large": large}, batch_size=16, rounds=2, calls=3, warmup=1)
    assert set(ms) == {"small", "large"} and ms["small"] > 0
    assert ms["large"] > ms["small"]


@pytest.mark.parametrize("call, match", [
    (lambda: ct.magnitude_prune(_mlp(), 1.0), "sparsity must be in"),
    (lambda: ct.magnitude_prune(_mlp(), -0.1), "sparsity must be in"),
    (lambda: ct.neuron_prune(_mlp(), 1.5), "fraction must be in"),
    (lambda: ct.neuron_prune(nn.Sequential(nn.Linear(3, 3)), 0.5), "must be a kdtools.models.MLP"),
    (lambda: ct.linear_layers(nn.Sequential(nn.ReLU())), "nn.Linear"),
    (lambda: ct.quantize_static_int8(_mlp(), torch.empty(0, 20)), "calibration_images"),
    (lambda: ct.quantize_static_int8(_mlp(), _inputs(), engine="tpu"), "engine must be one of"),
    (lambda: ct.symmetric_int8(torch.ones(3)), r"weight must be a floating-point matrix \[out, in\], got \[3\]"),
    (lambda: ct.finetune(_mlp(), _tiny_data(), objective="mse"), "objective must be one of"),
    (lambda: ct.finetune(_mlp(), _tiny_data(), objective="kd"), "needs a teacher"),
    (lambda: ct.finetune_split(torch.arange(10), 0, 5), "train_per_class and valid_per_class must be >= 1"),
    (lambda: ct.interleaved_latency_ms({}), "models must name at least one model"),
    (lambda: ct.interleaved_latency_ms({"m": _mlp()}, batch_size=0), "batch_size, rounds and calls must be >= 1"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_shrink_refuses_a_layer_with_no_neuron_left():
    model = _mlp(hidden=(4, 4))
    with torch.no_grad():
        model.net.fc2.weight.zero_()
        model.net.fc2.bias.zero_()
    with pytest.raises(ValueError, match="hidden layer 2 has no neuron left"):
        ct.shrink_mlp(model)


def test_evaluate_accepts_an_int8_model_without_parameters():
    from kdtools.train import evaluate, model_device

    quantized = ct.quantize_dynamic_int8(_mlp(in_features=784))
    assert list(quantized.parameters()) == [] and model_device(quantized) == torch.device("cpu")
    assert 0.0 <= evaluate(quantized, _tiny_loader(features=784)) <= 100.0
