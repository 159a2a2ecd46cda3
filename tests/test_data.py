"""Tests of advjax.data: every source on real files (../shared/data) or small files written here.

Real files: the MNIST test IDX, Fashion-MNIST IDX (60k + 10k) and the CIFAR-10 test npz of the
shared data dir. Formats not present there (CIFAR pickles, SVHN .mat / npz, prepared tfds data)
are written to tmp_path in their official layouts.
"""
from __future__ import annotations

import gzip
import io
import os
import pathlib
import pickle
import shutil
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advjax import data as D
from advjax.data import cifar as cifar_mod
from advjax.data import idx as idx_mod

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connect or DNS lookup during the test fails loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("advjax.data tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Default search dirs all point into an empty tmp tree (cwd, HOME, env vars)."""
    work = tmp_path / "cwd" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    return tmp_path


# ------------------------------------------------------------------------------ real MNIST / F-MNIST
def test_mnist_test_split_real_contents(shared_data, no_network):
    ds = D.load("mnist", "test", data_dir=shared_data)
    assert len(ds) == 10000 and ds.x.shape == (10000, 28, 28, 1)
    assert ds.x.dtype == np.uint8 and ds.y.dtype == np.int32
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10 and ds.domain == (0.0, 1.0)
    assert ds.x.min() == 0 and ds.x.max() == 255
    assert np.bincount(ds.y, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert ds.source.startswith(str(shared_data)) and ds.source.endswith("t10k-images-idx3-ubyte.gz")
    # MNIST digits sit in the centre: the border is (almost) empty, the centre bright
    mean = ds.x[..., 0].mean(axis=0)
    assert mean[:, :2].max() < 1.0 and mean[10:18, 10:18].mean() > 60


def test_mnist_slices_partition_the_test_split(shared_data):
    full = D.load("mnist", "test", data_dir=shared_data)
    tr = D.load("mnist", "test[:8000]", data_dir=shared_data)
    te = D.load("mnist", "test[8000:]", data_dir=shared_data)
    assert (len(tr), len(te)) == (8000, 2000)
    assert tr.split == "test[:8000]" and te.split == "test[8000:]"
    np.testing.assert_array_equal(np.concatenate([tr.x, te.x]), full.x)
    np.testing.assert_array_equal(np.concatenate([tr.y, te.y]), full.y)
    pct = D.load("mnist", "test[:80%]", data_dir=shared_data)
    np.testing.assert_array_equal(pct.y, tr.y)
    neg = D.load("mnist", "test[-10:]", data_dir=shared_data)
    np.testing.assert_array_equal(neg.x, full.x[-10:])


def test_mnist_train_missing_says_only_test_and_suggests_slice(shared_data, isolated):
    t0 = time.perf_counter()
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load("mnist", "train", data_dir=shared_data)
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert "'mnist'" in msg and str(shared_data) in msg
    assert "Only split(s) ['test']" in msg and "test[:8000]" in msg
    assert isinstance(err.value, ValueError) and isinstance(err.value, FileNotFoundError)


def test_fashion_mnist_train_and_test(shared_data):
    tr = D.load("fashion_mnist", "train", data_dir=shared_data)
    te = D.load("fashion_mnist", "test", data_dir=shared_data)
    assert tr.x.shape == (60000, 28, 28, 1) and te.x.shape == (10000, 28, 28, 1)
    assert np.bincount(tr.y, minlength=10).tolist() == [6000] * 10
    assert np.bincount(te.y, minlength=10).tolist() == [1000] * 10
    assert tr.x.max() == 255 and te.x.min() == 0
    # different images in the two splits (spot check: first images differ)
    assert not np.array_equal(tr.x[:100], te.x[:100])
    assert D.load("fashion-mnist", "test[:5]", data_dir=shared_data).name == "fashion_mnist"


def test_raw_idx_equals_gzip_and_corrupt_idx_is_clear(shared_data, tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    for kind in ("images-idx3", "labels-idx1"):
        raw = gzip.decompress((shared_data / "mnist" / f"t10k-{kind}-ubyte.gz").read_bytes())
        (d / f"t10k-{kind}-ubyte").write_bytes(raw)
    a = D.load("mnist", "test", data_dir=tmp_path, search_defaults=False)
    b = D.load("mnist", "test", data_dir=shared_data, search_defaults=False)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.source == str(d / "t10k-images-idx3-ubyte")

    img = d / "t10k-images-idx3-ubyte"
    raw = img.read_bytes()
    img.write_bytes(raw[: len(raw) - 1000])  # truncated payload
    with pytest.raises(D.DataFormatError, match="truncated"):
        D.load("mnist", "test", data_dir=tmp_path, search_defaults=False)
    img.write_bytes(b"\x12\x34" + raw[2:])  # bad magic
    with pytest.raises(D.DataFormatError, match="not an IDX file"):
        D.load("mnist", "test", data_dir=tmp_path, search_defaults=False)
    gz = gzip.compress(raw, compresslevel=1)
    img.unlink()
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])  # truncated gzip
    with pytest.raises(D.DataFormatError, match="gzip"):
        D.load("mnist", "test", data_dir=tmp_path, search_defaults=False)
    # labels file of a different length than the images
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gz)
    lab = d / "t10k-labels-idx1-ubyte"
    lab.write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(5))
    with pytest.raises(D.DataFormatError, match="10000 images but"):
        D.load("mnist", "test", data_dir=tmp_path, search_defaults=False)


def test_read_idx_big_endian_int_payload(tmp_path):
    vals = np.arange(-3, 3, dtype=">i4").reshape(2, 3)
    p = tmp_path / "a.idx"
    p.write_bytes(b"\x00\x00\x0c\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + vals.tobytes())
    np.testing.assert_array_equal(idx_mod.read_idx(p), np.arange(-3, 3).reshape(2, 3))


# ------------------------------------------------------------------------------------ real CIFAR npz
def test_cifar10_test_npz_real_contents(shared_data, no_network):
    ds = D.load("cifar10", "test", data_dir=shared_data)
    assert ds.x.shape == (10000, 32, 32, 3) and ds.x.dtype == np.uint8
    assert np.bincount(ds.y, minlength=10).tolist() == [1000] * 10
    assert ds.source == str(shared_data / "cifar10" / "test_jpeg_q75.npz")  # the larger file wins
    assert 90 < ds.x.mean() < 160 and ds.x.std() > 40  # natural images, not noise or blanks
    small = D.load("cifar10", "test", data_dir=shared_data, file="test_first20_lossless.npz")
    assert len(small) == 20 and small.source.endswith("test_first20_lossless.npz")
    # the q75 file is sorted by class; each lossless image has its JPEG copy there, same label
    assert np.all(np.diff(ds.y) >= 0)
    xq = ds.x.astype(np.float32)
    for i in range(3):
        dist = np.abs(xq - small.x[i]).mean(axis=(1, 2, 3))
        j = int(dist.argmin())
        assert ds.y[j] == small.y[i] and dist[j] < 12 and np.sort(dist)[1] > 2 * dist[j]
    # shuffle_seed permutes before slicing: disjoint, class-balanced halves
    a = D.load("cifar10", "test[:8000]", data_dir=shared_data, shuffle_seed=0)
    b = D.load("cifar10", "test[8000:]", data_dir=shared_data, shuffle_seed=0)
    assert len(a) == 8000 and len(b) == 2000
    counts = np.bincount(b.y, minlength=10)
    assert counts.min() > 150 and counts.max() < 250, counts
    np.testing.assert_array_equal(np.bincount(a.y, minlength=10) + counts, [1000] * 10)


def test_cifar10_train_missing_names_test_only(shared_data, isolated):
    t0 = time.perf_counter()
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load("cifar10", "train", data_dir=shared_data)
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert "test_jpeg_q75.npz" in msg and "Only split(s) ['test']" in msg
    assert "cifar-10-python.tar.gz" in msg


# --------------------------------------------------------------------------------- missing datasets
@pytest.mark.parametrize(
    "name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped", "tiny_imagenet"]
)
def test_missing_dataset_is_fast_and_names_every_dir(name, isolated, no_network, monkeypatch):
    empty = isolated / "empty"
    empty.mkdir()
    env_dir = isolated / "envdir"
    monkeypatch.setenv(D.ENV_VAR, str(env_dir))
    t0 = time.perf_counter()
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load(name, "test" if name != "tiny_imagenet" else "validation", data_dir=empty, search_defaults=True)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, elapsed
    msg = str(err.value)
    assert repr(name) in msg
    dirs = [p for p, _ in D.search_dirs(empty, search_defaults=True)]
    assert [str(empty), str(env_dir)] == [str(p) for p in dirs[:2]]
    for p in dirs:
        assert str(p) in msg
    assert "How to get it" in msg and ("http" in msg or "tfds build" in msg)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="known datasets: moons, digits, mnist"):
        D.load("imagenet", "train")
    with pytest.raises(ValueError, match=r"splits \['train', 'test'\]"):
        D.load("mnist", "extra")
    with pytest.raises(ValueError, match="cannot parse split"):
        D.load("mnist", "test[::2]")
    with pytest.raises(ValueError, match="unknown keyword"):
        D.load("moons", "train", samples=10)
    with pytest.raises(ValueError, match="unknown keyword"):
        D.load("mnist", "test", seed=1)
    assert set(D.list_datasets()) == {
        "moons", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped",
        "tiny_imagenet",
    }


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 500), a=st.integers(-600, 600), b=st.integers(-600, 600),
       p=st.integers(0, 100))
def test_split_slices_follow_python_slicing(n, a, b, p):
    spec = D.parse_split(f"train[{a}:{b}]")
    assert (spec.base, spec.start, spec.stop) == ("train", a, b)
    assert list(range(n))[spec.indices(n)] == list(range(n))[a:b]
    head, tail = D.parse_split(f"test[:{p}%]"), D.parse_split(f"test[{p}%:]")
    idx = list(range(n))
    assert idx[head.indices(n)] + idx[tail.indices(n)] == idx
    assert abs(len(idx[head.indices(n)]) - n * p / 100) <= 0.5
    assert str(D.parse_split(f" val [{a}:] ")) == f"validation[{a}:]"


def test_empty_slice_is_an_error(shared_data):
    with pytest.raises(ValueError, match="selects no examples"):
        D.load("mnist", "test[10000:]", data_dir=shared_data)


def test_env_var_and_cwd_search(shared_data, isolated, monkeypatch):
    with pytest.raises(D.DatasetNotFoundError):
        D.load("mnist", "test")
    monkeypatch.setenv(D.ENV_VAR, str(shared_data))
    assert len(D.load("mnist", "test")) == 10000
    monkeypatch.delenv(D.ENV_VAR)
    shutil.copytree(shared_data / "mnist", pathlib.Path.cwd() / "data" / "mnist")
    ds = D.load("mnist", "test")
    assert ds.source.startswith(str(pathlib.Path.cwd() / "data"))


# ------------------------------------------------------------------------------ scikit-learn sets
def test_moons():
    tr = D.load("moons", "train", n_samples=500, noise=0.1, seed=3)
    te = D.load("moons", "test", n_samples=500, noise=0.1, seed=3)
    assert tr.x.shape == (400, 2) and te.x.shape == (100, 2) and tr.x.dtype == np.float32
    assert tr.domain is None and tr.num_classes == 2 and tr.input_shape == (2,)
    assert abs(tr.y.mean() - 0.5) < 0.1
    both = np.concatenate([tr.x, te.x])
    assert len(np.unique(both, axis=0)) == 500  # disjoint splits covering the sample
    again = D.load("moons", "train", n_samples=500, noise=0.1, seed=3)
    np.testing.assert_array_equal(again.x, tr.x)
    other = D.load("moons", "train", n_samples=500, noise=0.1, seed=4)
    assert not np.array_equal(other.x, tr.x)
    clean = D.load("moons", "train", n_samples=200, noise=0.0)
    # without noise every point lies on one of the two unit half circles
    c = np.where(clean.y[:, None] == 0, [0.0, 0.0], [1.0, 0.5])
    np.testing.assert_allclose(np.linalg.norm(clean.x - c, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="noise"):
        D.load("moons", "train", noise=-1.0)


def test_digits():
    tr, te = D.load("digits", "train"), D.load("digits", "test")
    assert len(tr) + len(te) == 1797 and tr.x.shape[1:] == (8, 8, 1) and tr.x.dtype == np.float32
    assert tr.x.min() == 0.0 and tr.x.max() == 1.0 and te.domain == (0.0, 1.0)
    # stratified: the test split has every class in (almost) the same proportion
    frac = np.bincount(te.y, minlength=10) / np.bincount(np.concatenate([tr.y, te.y]), minlength=10)
    assert np.all(np.abs(frac - 0.2) < 0.02), frac
    np.testing.assert_array_equal(D.load("digits", "test").x, te.x)
    assert not np.array_equal(D.load("digits", "test", seed=1).y, te.y)
    # pixel values are multiples of 1/16 (exact scaling of the 0..16 counts)
    np.testing.assert_array_equal(tr.x * 16, np.round(tr.x * 16))


# ---------------------------------------------------------------------------------- CIFAR pickles
def _cifar_dict(n, rng, label_keys, protocol):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    d = {b"batch_label": b"synthetic", b"data": data, b"filenames": [b"f%d.png" % i for i in range(n)]}
    for key, k in label_keys.items():
        d[key] = [int(v) for v in rng.integers(0, k, n)]
    return d, pickle.dumps(d, protocol=protocol)


def test_cifar10_pickles(tmp_path, no_network):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    dicts = {}
    for i, f in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        d, raw = _cifar_dict(7, rng, {b"labels": 10}, protocol=2 if i % 2 else 5)
        dicts[f] = d
        (folder / f).write_bytes(raw)
    tr = D.load("cifar10", "train", data_dir=tmp_path, search_defaults=False)
    te = D.load("cifar10", "test", data_dir=tmp_path, search_defaults=False)
    assert tr.x.shape == (35, 32, 32, 3) and te.x.shape == (7, 32, 32, 3)
    assert tr.source == str(folder)
    # channel-major rows -> NHWC: pixel (h, w) of channel c is data[c*1024 + h*32 + w]
    d = dicts["data_batch_2"]
    k, h, w, c = 3, 5, 17, 2
    assert tr.x[7 + k, h, w, c] == d[b"data"][k, c * 1024 + h * 32 + w]
    np.testing.assert_array_equal(tr.y[7:14], d[b"labels"])
    np.testing.assert_array_equal(te.x.reshape(7, -1, 3).transpose(0, 2, 1).reshape(7, -1),
                                  dicts["test_batch"][b"data"])


def test_cifar100_pickles_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for f in ("train", "test"):
        d, raw = _cifar_dict(9, rng, {b"fine_labels": 100, b"coarse_labels": 20}, protocol=4)
        (folder / f).write_bytes(raw)
    fine = D.load("cifar100", "test", data_dir=tmp_path, search_defaults=False)
    coarse = D.load("cifar100", "test", data_dir=tmp_path, search_defaults=False,
                    label_mode="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20
    np.testing.assert_array_equal(fine.y, d[b"fine_labels"])
    np.testing.assert_array_equal(coarse.y, d[b"coarse_labels"])
    np.testing.assert_array_equal(fine.x, coarse.x)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tampered_cifar_pickle_never_runs_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2)
    (folder / "test_batch").write_bytes(evil)
    with pytest.raises(D.DataFormatError, match=r"refusing to unpickle global (posix|os)\.system"):
        D.load("cifar10", "test", data_dir=tmp_path, search_defaults=False)
    assert not marker.exists()
    # other dangerous globals are refused too
    for mod, name in [("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load")]:
        payload = b"\x80\x02c" + f"{mod}\n{name}\n".encode() + b"q\x00."
        with pytest.raises(D.DataFormatError, match="refusing"):
            cifar_mod.safe_unpickle(_write(tmp_path / "p.pkl", payload))
    # truncated and non-dict pickles
    good = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]}, protocol=2)
    (folder / "test_batch").write_bytes(good[:-20])
    with pytest.raises(D.DataFormatError, match="corrupt or truncated"):
        D.load("cifar10", "test", data_dir=tmp_path, search_defaults=False)
    (folder / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(D.DataFormatError, match="expected a pickled dict"):
        D.load("cifar10", "test", data_dir=tmp_path, search_defaults=False)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8),
                                                      b"labels": [1, 2]}))
    with pytest.raises(D.DataFormatError, match=r"uint8 \[N, 3072\]"):
        D.load("cifar10", "test", data_dir=tmp_path, search_defaults=False)


def _write(path, raw):
    path.write_bytes(raw)
    return path


# ------------------------------------------------------------------------------------- SVHN & npz
def test_svhn_npz_multi_split_file_and_mat(tmp_path):
    rng = np.random.default_rng(2)
    x_tr = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    y_tr = rng.integers(0, 10, 12).astype(np.uint8)
    x_te = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    y_te = rng.integers(0, 10, (5, 1))
    (tmp_path / "svhn_cropped").mkdir()
    np.savez(tmp_path / "svhn_cropped" / "svhn.npz", x_train=x_tr, y_train=y_tr, x_test=x_te,
             y_test=y_te)
    tr = D.load("svhn", "train", data_dir=tmp_path, search_defaults=False)
    te = D.load("svhn_cropped", "test[1:4]", data_dir=tmp_path, search_defaults=False)
    np.testing.assert_array_equal(tr.x, x_tr)
    np.testing.assert_array_equal(tr.y, y_tr)
    np.testing.assert_array_equal(te.x, x_te[1:4])
    np.testing.assert_array_equal(te.y, y_te[1:4, 0])
    with pytest.raises(D.DatasetNotFoundError, match=r"Only split\(s\) \['test', 'train'\]"):
        D.load("svhn_cropped", "extra", data_dir=tmp_path, search_defaults=False)

    # the official .mat layout (X [32, 32, 3, N], labels 1..10 with 10 = digit 0) wins over npz
    from scipy.io import savemat

    y_mat = np.array([[10], [1], [9], [10]], dtype=np.uint8)
    savemat(tmp_path / "svhn_cropped" / "test_32x32.mat",
            {"X": x_te[:4].transpose(1, 2, 3, 0), "y": y_mat})
    mat = D.load("svhn_cropped", "test", data_dir=tmp_path, search_defaults=False)
    assert mat.source.endswith("test_32x32.mat")
    np.testing.assert_array_equal(mat.x, x_te[:4])
    np.testing.assert_array_equal(mat.y, [0, 1, 9, 0])


def test_corrupt_npz_is_clear(tmp_path):
    d = tmp_path / "cifar10"
    d.mkdir()
    x = np.zeros((4, 32, 32, 3), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, x=x, y=np.arange(4))
    raw = buf.getvalue()
    (d / "test.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(D.DataFormatError, match="test.npz"):
        D.load("cifar10", "test", data_dir=tmp_path, search_defaults=False)
    np.savez(d / "test.npz", x=np.zeros((4, 32, 32), np.uint8), y=np.arange(4))
    with pytest.raises(D.DataFormatError, match=r"expected \[N, 32, 32, 3\]"):
        D.load("cifar10", "test", data_dir=tmp_path, search_defaults=False)
    np.savez(d / "test.npz", x=np.array([object()] * 4), y=np.arange(4))
    with pytest.raises(D.DataFormatError, match="pickled objects"):
        D.load("cifar10", "test", data_dir=tmp_path, search_defaults=False)
    np.savez(d / "test.npz", x=x, y=np.arange(4) + 8)
    with pytest.raises(D.DataFormatError, match=r"labels must lie in \[0, 10\)"):
        D.load("cifar10", "test", data_dir=tmp_path, search_defaults=False)


def test_tiny_imagenet_npz(tmp_path):
    d = tmp_path / "tiny_imagenet"
    d.mkdir()
    x = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    np.savez(d / "val.npz", x=x, y=np.array([0, 199, 5, 7, 9, 100]))
    ds = D.load("tiny_imagenet", "validation", data_dir=tmp_path, search_defaults=False)
    assert ds.num_classes == 200 and ds.x.shape == (6, 64, 64, 3) and ds.y[1] == 199


def test_tiny_imagenet_official_jpeg_folders(tmp_path):
    from PIL import Image

    base = tmp_path / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)][::-1]  # file order is not the label order
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w, shade in [("n00000003", 30), ("n00000150", 90)]:
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        for k in range(2):
            Image.fromarray(np.full((64, 64, 3), shade + k, np.uint8)).save(d / f"{w}_{k}.JPEG", quality=95)
    (base / "val" / "images").mkdir(parents=True)
    Image.fromarray(np.full((64, 64), 200, np.uint8)).save(base / "val" / "images" / "val_0.JPEG")
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn00000150\t0\t0\t10\t10\n")
    tr = D.load("tiny_imagenet", "train", data_dir=tmp_path, search_defaults=False)
    assert tr.x.shape == (4, 64, 64, 3) and tr.y.tolist() == [3, 3, 150, 150]
    np.testing.assert_allclose(tr.x.reshape(4, -1).mean(1), [30, 31, 90, 91], atol=1.0)
    va = D.load("tiny_imagenet", "val", data_dir=tmp_path, search_defaults=False)
    assert va.y.tolist() == [150] and va.x.shape == (1, 64, 64, 3)  # grayscale -> RGB
    assert abs(float(va.x.mean()) - 200) < 1.0


# ------------------------------------------------------------------------------ prepared tfds data
def _prepare_fake_tfds_mnist(data_dir: pathlib.Path):
    tfds = pytest.importorskip("tensorflow_datasets")
    PIL = pytest.importorskip("PIL.Image")

    class FakeMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "mnist"
        VERSION = tfds.core.Version("3.0.1")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(6), "test": self._generate_examples(4)}

        def _generate_examples(self, n):
            for i in range(n):  # PNG bytes written by PIL: no TensorFlow needed
                buf = io.BytesIO()
                PIL.fromarray(np.full((28, 28), 10 * i + 1, np.uint8)).save(buf, format="PNG")
                yield i, {"image": buf.getvalue(), "label": i}

    FakeMnist(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_prepared_tfds_dir(tmp_path, isolated, no_network):
    tfds_dir = tmp_path / "tfds"
    try:
        _prepare_fake_tfds_mnist(tfds_dir)
    except ImportError as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"cannot write a prepared tfds dataset without TensorFlow here: {e}")
    assert (tfds_dir / "mnist" / "3.0.1" / "dataset_info.json").is_file()
    ds = D.load("mnist", "train", data_dir=tfds_dir, search_defaults=False)
    assert ds.source == f"tfds:{tfds_dir / 'mnist' / '3.0.1'}"
    assert ds.x.shape == (6, 28, 28, 1) and ds.x.dtype == np.uint8
    assert sorted(ds.y.tolist()) == list(range(6))
    # each image is constant 10 * label + 1 (so images and labels stayed paired)
    np.testing.assert_array_equal(ds.x[:, 0, 0, 0], 10 * ds.y + 1)
    assert np.all(ds.x == ds.x[:, :1, :1, :])
    te = D.load("mnist", "test[:2]", data_dir=tfds_dir, search_defaults=False)
    assert len(te) == 2
    # ~/tensorflow_datasets is searched by default
    shutil.copytree(tfds_dir / "mnist", isolated / "home" / "tensorflow_datasets" / "mnist")
    assert len(D.load("mnist", "test")) == 4


def test_import_is_lazy():
    code = ("import sys, advjax.data; "
            "bad = [m for m in ('tensorflow_datasets', 'sklearn', 'tensorflow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------------------ batches
def test_batches_deterministic_cover_and_convert():
    x = np.arange(10 * 2 * 2 * 1, dtype=np.uint8).reshape(10, 2, 2, 1) * 6
    ds = D.Dataset(x=x, y=np.arange(10, dtype=np.int32), num_classes=10, domain=(0.0, 1.0),
                   name="toy")
    run = lambda **kw: list(D.batches(ds, 3, **kw))  # noqa: E731
    a, b = run(seed=1, epoch=2), run(seed=1, epoch=2)
    assert len(a) == 3 and all(xb.shape == (3, 2, 2, 1) for xb, _ in a)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert a[0][0].dtype == np.float32 and a[0][1].dtype == np.int32
    # pixels are x / 255 of the stored ones, paired with their labels
    for xb, yb in a:
        np.testing.assert_array_equal(xb, x[yb].astype(np.float32) / 255.0)
    assert 0.0 <= min(xb.min() for xb, _ in a) and max(xb.max() for xb, _ in a) <= 1.0
    orders = {tuple(np.concatenate([yb for _, yb in run(seed=s, epoch=e, drop_remainder=False)]))
              for s in (0, 1) for e in (0, 1, 2)}
    assert len(orders) == 6  # seed and epoch both change the order
    for o in orders:
        assert sorted(o) == list(range(10))  # each epoch covers every example once
    full = run(drop_remainder=False, shuffle=False)
    assert [len(yb) for _, yb in full] == [3, 3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in full]), np.arange(10))
    assert D.num_batches(ds, 3) == 3 and D.num_batches(ds, 3, drop_remainder=False) == 4


def test_batches_float_passthrough_and_errors():
    moons = D.load("moons", "test", n_samples=100)
    xb, yb = next(D.batches(moons, 8, shuffle=False))
    np.testing.assert_array_equal(xb, moons.x[:8])
    with pytest.raises(ValueError, match="batch_size"):
        D.batches(moons, 0)
    with pytest.raises(ValueError, match="exceeds"):
        D.batches(moons, 1000)
    with pytest.raises(ValueError, match="seed"):
        D.batches(moons, 4, seed=-1)
    with pytest.raises(ValueError, match="labels must lie"):
        D.Dataset(x=np.zeros((2, 2), np.float32), y=np.array([0, 3], np.int32), num_classes=2,
                  domain=None, name="bad")


# ------------------------------------------------------------------------------------------ augment
def _match_window(out, img, pad):
    """All (dy, dx, flipped) with out == window of the zero-padded img (or its mirror)."""
    h, w, _ = img.shape
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    hits = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[dy:dy + h, dx:dx + w]
            if np.array_equal(out, win):
                hits.append((dy, dx, False))
            if np.array_equal(out, win[:, ::-1]):
                hits.append((dy, dx, True))
    return hits


def test_augment_crops_are_shifted_windows_and_flips_are_mirrors():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0.01, 1.0, (64, 12, 10, 3)).astype(np.float32))
    key = jax.random.key(7)
    out = D.augment(key, x, pad=3)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, D.augment(key, x, pad=3))  # deterministic for a key
    assert not np.array_equal(out, D.augment(jax.random.key(8), x, pad=3))
    out, xn = np.asarray(out), np.asarray(x)
    seen = set()
    for i in range(len(xn)):
        hits = _match_window(out[i], xn[i], 3)
        assert len(hits) == 1, (i, hits)  # exactly one window (pixels are distinct, nonzero)
        seen.add(hits[0])
    offsets = {(dy, dx) for dy, dx, _ in seen}
    flips = {f for _, _, f in seen}
    assert flips == {True, False}
    assert len(offsets) > 15  # 49 possible offsets, 64 draws
    assert len({dy for dy, _ in offsets}) >= 5 and len({dx for _, dx in offsets}) >= 5


def test_augment_flip_only_and_identity():
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(32, 5, 6, 1)).astype(np.float32))
    key = jax.random.PRNGKey(0)  # raw uint32 keys work too
    np.testing.assert_array_equal(D.augment(key, x, pad=0, flip=False), x)
    out = np.asarray(D.augment(key, x, pad=0, flip=True))
    same = np.all(out == np.asarray(x), axis=(1, 2, 3))
    mirrored = np.all(out == np.asarray(x)[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ mirrored) and same.any() and mirrored.any()
    crop = np.asarray(D.augment(key, x, pad=2, flip=False))
    for i in range(8):
        assert [h[2] for h in _match_window(crop[i], np.asarray(x[i]), 2)] == [False]
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        D.augment(key, x[0])
    with pytest.raises(ValueError, match="pad"):
        D.augment(key, x, pad=-1)
