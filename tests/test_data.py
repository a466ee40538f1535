import os

import pytest
import torch

from kdtools import data
from kdtools.data import (MNIST_MEAN, MNIST_STD, TensorData, TensorLoader, load_mnist, random_shift,
                          stratified_subset)


def test_loads_idx_fixture_normalised(tiny_mnist):
    root, arrays = tiny_mnist
    train = load_mnist(True, root=root, download=False)
    test = load_mnist(False, root=root, download=False)
    images, labels = arrays["train"]
    assert train.images.shape == (20, 1, 28, 28) and train.images.dtype == torch.float32
    assert test.images.shape == (10, 1, 28, 28)
    expected = (torch.from_numpy(images[3].astype("float32")) / 255.0 - MNIST_MEAN) / MNIST_STD
    torch.testing.assert_close(train.images[3, 0], expected)
    assert train.labels.tolist() == labels.tolist()
    assert train.labels.dtype == torch.int64


def test_root_from_environment(tiny_mnist, monkeypatch):
    root, _ = tiny_mnist
    monkeypatch.setenv("KDTOOLS_DATA", str(root))
    assert data.default_data_root() == root
    assert len(load_mnist(False)) == 10


def test_default_root_is_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("KDTOOLS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_data_root() == tmp_path / "kdtools" / "data"


def test_missing_files_without_download_names_root(tmp_path):
    with pytest.raises(RuntimeError, match=str(tmp_path)) as err:
        load_mnist(True, root=tmp_path, download=False)
    assert "KDTOOLS_DATA" in str(err.value) and "lacks train-images-idx3-ubyte" in str(err.value)


def test_failed_download_gives_one_runtime_error(tmp_path, monkeypatch):
    calls = []

    def fake(root, train, download):
        calls.append(download)
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_torchvision_mnist", fake)
    with pytest.raises(RuntimeError, match="download failed.*network is unreachable") as err:
        load_mnist(True, root=tmp_path)
    assert str(tmp_path) in str(err.value)
    assert calls == [True]  # the files are missing, so the download was tried once


def _raw(root):
    return root / "MNIST" / "raw"


def _load_fails(root, *, train=True, match):
    with pytest.raises(data.MNISTFileError, match=match) as err:
        load_mnist(train, root=root, download=False)
    assert "Fix:" in str(err.value)
    return str(err.value)


def test_flipped_bytes_inside_the_images_are_reported_as_corrupt(tiny_mnist):
    root, _ = tiny_mnist
    path = _raw(root) / "train-images-idx3-ubyte"
    blob = bytearray(path.read_bytes())
    blob[1000:1010] = bytes(range(10))  # same size, same header: only the hash can tell
    path.write_bytes(bytes(blob))
    message = _load_fails(root, match="is corrupt: right size and header")
    assert str(path) in message
    assert len(load_mnist(False, root=root, download=False)) == 10  # the test split is fine


def test_truncated_file_is_reported_as_truncated_not_missing(tiny_mnist):
    root, _ = tiny_mnist
    path = _raw(root) / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    message = _load_fails(root, match=r"is truncated: 5,000 bytes of 15,696")
    assert "not found" not in message and "downloading is switched off" not in message


def test_header_shorter_than_idx_header_is_truncated(tiny_mnist):
    root, _ = tiny_mnist
    (_raw(root) / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    _load_fails(root, match="not even the 8-byte IDX header")


def test_swapped_train_and_test_files_are_named_as_swapped(tiny_mnist):
    root, _ = tiny_mnist
    raw = _raw(root)
    for kind in ("images-idx3", "labels-idx1"):
        train, test = raw / f"train-{kind}-ubyte", raw / f"t10k-{kind}-ubyte"
        blobs = train.read_bytes(), test.read_bytes()
        train.write_bytes(blobs[1])
        test.write_bytes(blobs[0])
    message = _load_fails(root, match="holds 10 images, the size of the 't10k' split.*swapped")
    assert "train-labels-idx1-ubyte holds 10 labels" in message  # every bad file is listed
    _load_fails(root, train=False, match="holds 20 images, the size of the 'train' split")


def test_gzip_file_under_the_raw_name_is_named(tiny_mnist):
    import gzip

    root, _ = tiny_mnist
    path = _raw(root) / "t10k-labels-idx1-ubyte"
    path.write_bytes(gzip.compress(path.read_bytes()))
    _load_fails(root, train=False, match="not an IDX labels file.*gzip-compressed")


def test_verify_false_skips_the_checks(tiny_mnist):
    root, _ = tiny_mnist
    path = _raw(root) / "train-images-idx3-ubyte"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert len(load_mnist(True, root=root, download=False, verify=False)) == 20


def test_each_file_is_hashed_once_per_process_until_it_changes(tiny_mnist, monkeypatch):
    root, _ = tiny_mnist
    hashed = []
    real = data.sha256
    monkeypatch.setattr(data, "sha256", lambda path: hashed.append(path.name) or real(path))
    data._VERIFIED.clear()
    load_mnist(True, root=root, download=False)
    load_mnist(True, root=root, download=False)
    assert sorted(hashed) == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    path = _raw(root) / "train-images-idx3-ubyte"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(1, 1))  # a new modification time, as any real rewrite gives
    _load_fails(root, match="is corrupt")


def test_real_mnist_files_verify(mnist):
    data.verify_mnist()  # the files the mnist fixture loaded are the originals


def test_a_corrupted_copy_of_real_mnist_is_refused_with_its_path(mnist, tmp_path):
    import shutil

    shutil.copytree(_raw(data.default_data_root()), _raw(tmp_path))
    path = _raw(tmp_path) / "train-images-idx3-ubyte"
    path.chmod(0o644)
    with open(path, "r+b") as handle:  # random bytes in the middle of the images, size unchanged
        handle.seek(20_000_000)
        handle.write(torch.randint(0, 256, (100_000,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    message = _load_fails(tmp_path, match="train-images-idx3-ubyte is corrupt")
    assert str(tmp_path) in message


def test_real_mnist_matches_published_counts(mnist):
    train, test = mnist
    assert len(train) == 60000 and len(test) == 10000
    counts = torch.bincount(train.labels, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    # normalised with the published constants: mean ~0, std ~1 on the training set
    assert abs(train.images.mean().item()) < 1e-3 and abs(train.images.std().item() - 1) < 1e-3


def test_stratified_subset_is_balanced_and_deterministic():
    labels = torch.arange(1000) % 10
    a = stratified_subset(labels, per_class=7, seed=3)
    b = stratified_subset(labels, per_class=7, seed=3)
    c = stratified_subset(labels, per_class=7, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(labels[a], minlength=10).tolist() == [7] * 10
    assert torch.equal(a, a.sort().values) and len(set(a.tolist())) == 70
    frac = stratified_subset(labels, fraction=0.5)
    assert torch.bincount(labels[frac]).tolist() == [50] * 10


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one of per_class and fraction"),
    ({"per_class": 1, "fraction": 0.5}, "exactly one"),
    ({"fraction": 1.5}, "fraction must be in"),
    ({"per_class": 0}, "per_class must be >= 1"),
    ({"per_class": 200}, "has only 100 examples"),
])
def test_stratified_subset_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stratified_subset(torch.arange(1000) % 10, **kwargs)


def _toy(n=10):
    return TensorData(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 28, 28).clone(),
                      torch.arange(n) % 10)


def test_loader_covers_every_example_once_per_epoch_and_is_reproducible():
    loader = TensorLoader(_toy(10), batch_size=3, shuffle=True, seed=5)
    first = torch.cat([idx for _, _, idx in loader])
    second = torch.cat([idx for _, _, idx in loader])
    assert sorted(first.tolist()) == list(range(10)) and sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)  # reshuffled every epoch
    again = TensorLoader(_toy(10), batch_size=3, shuffle=True, seed=5)
    assert torch.equal(torch.cat([idx for _, _, idx in again]), first)
    assert len(loader) == 4 and len(TensorLoader(_toy(10), 3, drop_last=True)) == 3


def test_loader_batches_match_their_indices():
    toy = _toy(10)
    for images, labels, idx in TensorLoader(toy, batch_size=4, shuffle=True, seed=1):
        assert torch.equal(images[:, 0, 0, 0], idx.float())
        assert torch.equal(labels, idx % 10)


def test_random_shift_moves_content_by_at_most_max_shift():
    images = torch.zeros(64, 1, 28, 28)
    images[:, 0, 14, 14] = 1.0
    shifted = random_shift(2)(images, torch.Generator().manual_seed(0))
    pos = shifted[:, 0].flatten(1).argmax(dim=1)
    rows, cols = pos // 28, pos % 28
    assert (rows - 14).abs().max() <= 2 and (cols - 14).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # really moves them, in several directions
    assert torch.allclose(shifted.sum(dim=(1, 2, 3)), torch.ones(64))  # nothing lost near the centre


def test_tensor_data_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        TensorData(torch.zeros(3, 1, 28, 28), torch.zeros(4, dtype=torch.long))


def test_tests_cannot_reach_the_network_but_loopback_works():
    import socket

    with pytest.raises(OSError, match="tests must not use the network"):
        socket.getaddrinfo("yann.lecun.com", 80)
    with pytest.raises(OSError, match="tests must not use the network"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed
    assert socket.getaddrinfo("localhost", 80)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with socket.create_connection(server.getsockname(), timeout=1):
        pass
    server.close()


def test_without_mnist_the_suite_skips_with_one_reason_and_no_download(pytester, monkeypatch, tmp_path):
    from pathlib import Path

    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(test_needs_mnist="""
        from kdtools.data import load_mnist

        def test_by_fixture(mnist):
            assert len(mnist[0]) == 60000

        def test_by_hand():
            assert len(load_mnist(True)) == 60000  # download=None: would download if it could

        def test_unrelated():
            assert True
    """)
    monkeypatch.delenv("KDTOOLS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    result = pytester.runpytest("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    skipped = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and skipped[0].startswith("SKIPPED [2]"), result.outlines
    assert "real MNIST not found (tests never download): set KDTOOLS_DATA" in skipped[0]
    assert not (tmp_path / "empty-cache" / "kdtools" / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
