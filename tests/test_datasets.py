"""Dataset loaders: real data (digits, Fashion-MNIST) and one broken file per error case."""

import gzip
import struct

import numpy as np
import pytest

from nms.sw.datasets import (Dataset, DatasetError, load_dataset, load_digits, load_idx_dir,
                             load_npy, load_npz, read_idx)


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path, arr, *, gz=True, code=0x08):
    data = idx_bytes(np.asarray(arr), code)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_idx_dir(root, *, n=20, test=True, gz=True, h=4, w=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    y = (np.arange(n) % 4).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(root / f"train-images-idx3-ubyte{ext}", X, gz=gz)
    write_idx(root / f"train-labels-idx1-ubyte{ext}", y, gz=gz)
    if test:
        write_idx(root / f"t10k-images-idx3-ubyte{ext}", X[:8], gz=gz)
        write_idx(root / f"t10k-labels-idx1-ubyte{ext}", y[:8], gz=gz)
    return X, y


# ---------------------------------------------------------------------------- real data

def test_digits_default_split_is_fixed_and_stratified():
    d = load_dataset("digits")
    assert d.name == "digits" and d.max_value == 16 and d.image_shape == (8, 8)
    assert d.X_train.dtype == np.uint8 and d.X_train.max() == 16
    assert len(d.y_train) == 1347 and len(d.y_test) == 450
    # stratified: every class keeps ~75 % of its members in train
    _, tr = np.unique(d.y_train, return_counts=True)
    _, te = np.unique(d.y_test, return_counts=True)
    assert np.all(np.abs(tr / (tr + te) - 0.75) < 0.01)
    again = load_digits()
    assert np.array_equal(again.X_train, d.X_train) and np.array_equal(again.y_test, d.y_test)
    assert d.train_flat().shape == (1347, 64) and d.test_flat().shape == (450, 64)


def test_fashion_mnist(fashion_dir):
    d = load_dataset(fashion_dir)
    assert d.name == "fashion-mnist"
    assert d.X_train.shape == (60000, 28, 28) and d.X_test.shape == (10000, 28, 28)
    assert d.X_train.dtype == np.uint8 and d.max_value == 255
    assert np.bincount(d.y_train).tolist() == [6000] * 10
    assert np.bincount(d.y_test).tolist() == [1000] * 10


def test_fashion_mnist_mini_is_a_faithful_subset(fashion_mini_dir, fashion_dir):
    """The committed subset holds exactly the documented images of the full set."""
    mini, full = load_dataset(fashion_mini_dir), load_dataset(fashion_dir)
    assert mini.X_train.shape == (1600, 28, 28) and mini.X_test.shape == (320, 28, 28)
    per = [1024] + [64] * 9
    idx = np.sort(np.concatenate([np.flatnonzero(full.y_train == c)[:per[c]] for c in range(10)]))
    assert np.array_equal(mini.X_train, full.X_train[idx]) and np.array_equal(mini.y_train, full.y_train[idx])


# ---------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [True, False])
def test_idx_dir_roundtrip(tmp_path, gz):
    X, y = make_idx_dir(tmp_path, gz=gz)
    d = load_idx_dir(tmp_path)
    assert np.array_equal(d.X_train, X) and np.array_equal(d.y_train, y)
    assert d.y_train.dtype == np.int64 and d.X_test.shape == (8, 4, 3)


def test_idx_dir_without_test_split(tmp_path):
    make_idx_dir(tmp_path, test=False)
    d = load_dataset(tmp_path)
    assert not d.has_test and d.X_test is None
    with pytest.raises(DatasetError, match="no test split"):
        d.test_flat()


def test_read_idx_other_types(tmp_path):
    a = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    got = read_idx(write_idx(tmp_path / "a.idx", a, code=0x0C, gz=False))
    assert got.dtype == np.int32 and np.array_equal(got, a)


@pytest.mark.parametrize("mutate,words", [
    (lambda b: b"\x01\x00" + b[2:], "bad IDX magic"),
    (lambda b: b[:2] + b"\x42" + b[3:], "bad IDX magic"),
    (lambda b: b[:3], "too short"),
    (lambda b: b[:9], "truncated IDX header"),
    (lambda b: b[:-5], "truncated: header declares"),
    (lambda b: b + b"\x00\x00", "trailing bytes"),
])
def test_read_idx_malformed(tmp_path, mutate, words):
    good = idx_bytes(np.zeros((3, 2, 2), np.uint8))
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(mutate(good))
    with pytest.raises(DatasetError, match=words) as info:
        read_idx(p)
    assert str(p) in str(info.value)


def test_read_idx_corrupt_gzip(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 2), np.uint8)))[:-10])
    with pytest.raises(DatasetError, match="corrupt or truncated gzip"):
        read_idx(p)


def test_idx_count_mismatch(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(DatasetError, match="20 images but .* 19 labels"):
        load_idx_dir(tmp_path)


def test_idx_wrong_dtype_and_rank(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((20, 12), np.int32), code=0x0C)
    with pytest.raises(DatasetError, match="expected uint8 images of rank 3"):
        load_idx_dir(tmp_path)


def test_idx_missing_partner_and_empty_dir(tmp_path):
    with pytest.raises(DatasetError, match="no train-images"):
        load_idx_dir(tmp_path)
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="no matching t10k-labels"):
        load_idx_dir(tmp_path)


def test_idx_empty_dataset(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((0, 4, 4), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    with pytest.raises(DatasetError, match="empty"):
        load_idx_dir(tmp_path)


# ---------------------------------------------------------------------------- npz / npy

def test_npz_roundtrip_and_max_value(tmp_path):
    X = np.arange(40, dtype=np.int64).reshape(10, 4) % 17
    y = np.repeat([3, 8], 5)
    np.savez(tmp_path / "a.npz", X_train=X, y_train=y, X_test=X[:4], y_test=y[:4])
    d = load_dataset(tmp_path / "a.npz")
    assert d.X_train.dtype == np.uint8 and np.array_equal(d.X_train, X)
    assert d.max_value == 16 and d.name == "a" and d.classes.tolist() == [3, 8]
    np.savez(tmp_path / "b.npz", X_train=X, y_train=y, max_value=np.int64(255))
    assert load_npz(tmp_path / "b.npz").max_value == 255


def test_npy_pair(tmp_path):
    X = np.full((6, 2, 2), 200.0)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", np.array([0, 0, 1, 1, 2, 2]))
    d = load_dataset(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert d.X_train.dtype == np.uint8 and d.max_value == 200 and not d.has_test
    with pytest.raises(ValueError, match="needs a .npy label array"):
        load_dataset(tmp_path / "x.npy")
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        load_npy(tmp_path / "x.npy", tmp_path / "nope.npy")


GOOD_X = np.zeros((6, 3), np.uint8)
GOOD_Y = np.array([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("arrays,words", [
    (dict(y_train=GOOD_Y), "missing required array 'X_train'"),
    (dict(X_train=GOOD_X, y_train=GOOD_Y, x_test=GOOD_X), "unexpected key"),
    (dict(X_train=GOOD_X, y_train=GOOD_Y[:5]), "6 images but 5 labels"),
    (dict(X_train=np.full((6, 3), np.nan), y_train=GOOD_Y), "NaN"),
    (dict(X_train=np.full((6, 3), 0.5), y_train=GOOD_Y), "non-integer"),
    (dict(X_train=np.full((6, 3), 256), y_train=GOOD_Y), "outside the uint8 range"),
    (dict(X_train=np.full((6, 3), -1), y_train=GOOD_Y), "outside the uint8 range"),
    (dict(X_train=np.zeros(6), y_train=GOOD_Y), "expected \\(N, D\\)"),
    (dict(X_train=np.array(["a"] * 6), y_train=GOOD_Y), "dtype <U1"),
    (dict(X_train=np.zeros((0, 3)), y_train=np.zeros(0, int)), "empty"),
    (dict(X_train=np.zeros((6, 0)), y_train=GOOD_Y), "no pixels"),
    (dict(X_train=GOOD_X, y_train=GOOD_Y.reshape(3, 2)), "1-D"),
    (dict(X_train=GOOD_X, y_train=GOOD_Y + 0.5), "non-integer"),
    (dict(X_train=GOOD_X, y_train=np.array(list("aabbcc"))), "expected integers"),
    (dict(X_train=GOOD_X, y_train=np.array([0, 0, 1, 1, 1, 2])), "single training sample"),
    (dict(X_train=GOOD_X, y_train=GOOD_Y, X_test=GOOD_X[:2], y_test=np.array([0, 5])),
     "empty class\\(es\\) \\[5\\]"),
    (dict(X_train=GOOD_X, y_train=GOOD_Y, X_test=GOOD_X[:2]), "together"),
    (dict(X_train=GOOD_X, y_train=GOOD_Y, X_test=np.zeros((2, 4)), y_test=GOOD_Y[:2]),
     "test samples have shape"),
    (dict(X_train=GOOD_X + 9, y_train=GOOD_Y, max_value=np.int64(8)), "exceeds max_value"),
    (dict(X_train=GOOD_X, y_train=GOOD_Y, max_value=np.float64(8)), "integer scalar"),
])
def test_npz_malformed(tmp_path, arrays, words):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DatasetError, match=words) as info:
        load_dataset(p)
    assert "bad.npz" in str(info.value)


def test_not_an_archive(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="junk.npz: not a readable .npz"):
        load_dataset(p)


def test_unknown_specs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "a.csv").write_text("1,2\n")
    with pytest.raises(DatasetError, match="unsupported dataset file"):
        load_dataset(tmp_path / "a.csv")


def test_dataset_is_validated_on_construction():
    with pytest.raises(DatasetError, match="max_value"):
        Dataset("x", GOOD_X, GOOD_Y, max_value=0)
    d = Dataset("x", GOOD_X.astype(float), GOOD_Y.astype(np.int8))
    assert d.X_train.dtype == np.uint8 and d.y_train.dtype == np.int64
    assert d.summary()["train_per_class"] == {0: 2, 1: 2, 2: 2}
