"""Image-classification datasets for coreset selection: one container, a few offline loaders.

NMS selects from uint8 pixels (the accelerator reads raw images from memory), so every loader
returns the same :class:`Dataset`: uint8 images, integer labels, an optional test split and the
largest pixel value the format allows (used to normalise inputs to [0, 1] for training).

Sources (see ``docs/datasets.md`` for formats, error cases and licences):

* ``"digits"`` — scikit-learn's bundled 8×8 digits (UCI optdigits test set, 1797 images, grey
  levels 0..16), split 75/25 stratified with a fixed seed. Always available: the default.
* a directory of IDX files (MNIST / Fashion-MNIST layout), ``.gz`` or raw.
* a ``.npz`` archive (``X_train``, ``y_train``, optional ``X_test``, ``y_test``, ``max_value``).
* a ``.npy`` image array plus a ``.npy`` label array.

Every malformed input raises :class:`DatasetError` (a ``ValueError``) naming the file and what
is wrong with it.
"""

from __future__ import annotations

import gzip
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "DatasetError", "load_dataset", "load_digits", "load_idx_dir", "load_npz",
           "load_npy", "read_idx", "DIGITS_SPLIT_SEED", "DIGITS_TEST_FRACTION"]

#: fixed seed and test fraction of the stratified digits train/test split
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25

# IDX type codes (third magic byte) -> big-endian NumPy dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetError(ValueError):
    """A dataset file or array is malformed; the message names the file and the problem."""



def _portable(source: str | None) -> str | None:
    """A file-system source relative to the working directory (reports carry no machine paths)."""
    import os

    if source and os.path.isabs(source):
        return os.path.relpath(source)
    return source

@dataclass(frozen=True)
class Dataset:
    """A labelled image dataset with an optional test split.

    Attributes
    ----------
    name : str
        Short name for reports (``"digits"``, ``"fashion-mnist"``, a file stem…).
    X_train : np.ndarray of uint8, shape (N, H, W) or (N, D)
        Training images (or flat vectors).
    y_train : np.ndarray of int64, shape (N,)
        Training labels.
    X_test, y_test : np.ndarray or None
        Optional test split, same per-sample shape as the training split.
    max_value : int
        Largest value a pixel may take in this dataset (16 for digits, 255 for 8-bit images);
        inputs are divided by it to reach [0, 1].
    source : str
        Where the data came from (for reports).

    Notes
    -----
    Construction validates everything (see :func:`_check_split`): uint8 pixels, matching
    counts, no empty or single-sample class. A *class* is any label that occurs in the training
    or the test split; a label that occurs only in the test split is an **empty class** and is
    rejected, as is a class with a single training sample (DE-SNE needs at least two members
    per class to define neighbours).
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    max_value: int = 255
    source: str = ""

    def __post_init__(self):
        where = self.source or self.name
        X, y = _check_split(self.X_train, self.y_train, where=where, split="train")
        object.__setattr__(self, "X_train", X)
        object.__setattr__(self, "y_train", y)
        if (self.X_test is None) != (self.y_test is None):
            raise DatasetError(f"{where}: test images and test labels must be given together "
                               "(or neither)")
        if self.X_test is not None:
            Xt, yt = _check_split(self.X_test, self.y_test, where=where, split="test")
            if Xt.shape[1:] != X.shape[1:]:
                raise DatasetError(f"{where}: test samples have shape {Xt.shape[1:]} but training "
                                   f"samples have shape {X.shape[1:]}")
            object.__setattr__(self, "X_test", Xt)
            object.__setattr__(self, "y_test", yt)
        if not isinstance(self.max_value, (int, np.integer)) or not 1 <= int(self.max_value) <= 255:
            raise DatasetError(f"{where}: max_value must be an integer in 1..255, got "
                               f"{self.max_value!r}")
        object.__setattr__(self, "max_value", int(self.max_value))
        for split, arr in (("train", self.X_train), ("test", self.X_test)):
            if arr is not None and arr.size and int(arr.max()) > self.max_value:
                raise DatasetError(f"{where}: {split} pixel value {int(arr.max())} exceeds "
                                   f"max_value {self.max_value}")
        _check_classes(self.y_train, self.y_test, where=where)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Per-sample shape: ``(H, W)`` for images, ``(D,)`` for flat vectors."""
        return tuple(self.X_train.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.image_shape))

    @property
    def classes(self) -> np.ndarray:
        """Sorted class labels (all have >= 2 training samples)."""
        return np.unique(self.y_train)

    @property
    def has_test(self) -> bool:
        return self.X_test is not None

    def train_flat(self) -> np.ndarray:
        """Training images as a C-contiguous uint8 ``(N, D)`` matrix (what selectors take)."""
        return np.ascontiguousarray(self.X_train.reshape(len(self.X_train), -1))

    def test_flat(self) -> np.ndarray:
        """Test images as uint8 ``(N_test, D)``; raises if there is no test split."""
        if self.X_test is None:
            raise DatasetError(f"{self.source or self.name}: dataset has no test split")
        return np.ascontiguousarray(self.X_test.reshape(len(self.X_test), -1))

    def summary(self) -> dict:
        """JSON-able description (sizes, shape, per-class counts)."""
        labels, counts = np.unique(self.y_train, return_counts=True)
        return {
            "name": self.name, "source": _portable(self.source), "image_shape": list(self.image_shape),
            "n_train": int(len(self.y_train)),
            "n_test": int(len(self.y_test)) if self.y_test is not None else 0,
            "max_value": self.max_value,
            "train_per_class": {int(c): int(n) for c, n in zip(labels, counts)},
        }


# --------------------------------------------------------------------------------------------
# validation

def _check_pixels(X, *, where: str, split: str) -> np.ndarray:
    """Return ``X`` as uint8 after checking dtype, shape and range, or raise DatasetError."""
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.integer) or
                                 np.issubdtype(X.dtype, np.floating) or X.dtype == np.bool_):
        raise DatasetError(f"{where}: {split} images have dtype {X.dtype}; expected uint8 pixels "
                           "(integers 0..255)")
    if X.ndim not in (2, 3):
        raise DatasetError(f"{where}: {split} images have shape {X.shape}; expected (N, D) "
                           "vectors or (N, H, W) images")
    if X.shape[0] == 0:
        raise DatasetError(f"{where}: {split} split is empty (0 samples)")
    if min(X.shape[1:]) == 0:
        raise DatasetError(f"{where}: {split} samples have no pixels (shape {X.shape})")
    if X.dtype == np.uint8:
        return X
    if np.issubdtype(X.dtype, np.floating):
        if np.isnan(X).any():
            bad = np.argwhere(np.isnan(X))[0]
            raise DatasetError(f"{where}: {split} images contain NaN (first at index "
                               f"{tuple(int(i) for i in bad)}); pixels must be integers 0..255")
        if not np.isfinite(X).all():
            raise DatasetError(f"{where}: {split} images contain infinite values; pixels must be "
                               "integers 0..255")
        if (X != np.round(X)).any():
            raise DatasetError(f"{where}: {split} images contain non-integer values (e.g. data "
                               "normalised to [0, 1]); give raw uint8 pixels 0..255")
    lo, hi = X.min(), X.max()
    if lo < 0 or hi > 255:
        raise DatasetError(f"{where}: {split} pixel values span [{lo}, {hi}], outside the uint8 "
                           "range 0..255")
    return X.astype(np.uint8)


def _check_labels(y, n: int, *, where: str, split: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DatasetError(f"{where}: {split} labels have shape {y.shape}; expected a 1-D vector")
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or
                                   np.issubdtype(y.dtype, np.floating)):
        raise DatasetError(f"{where}: {split} labels have dtype {y.dtype}; expected integers")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise DatasetError(f"{where}: {split} labels contain NaN or infinite values")
        if (y != np.round(y)).any():
            raise DatasetError(f"{where}: {split} labels contain non-integer values")
    if len(y) != n:
        raise DatasetError(f"{where}: {split} has {n} images but {len(y)} labels; counts must "
                           "match")
    return y.astype(np.int64)


def _check_split(X, y, *, where: str, split: str):
    X = _check_pixels(X, where=where, split=split)
    y = _check_labels(y, X.shape[0], where=where, split=split)
    return X, y


def _check_classes(y_train: np.ndarray, y_test: np.ndarray | None, *, where: str) -> None:
    labels, counts = np.unique(y_train, return_counts=True)
    if y_test is not None:
        missing = np.setdiff1d(np.unique(y_test), labels)
        if missing.size:
            raise DatasetError(f"{where}: empty class(es) {missing.tolist()}: they occur in the "
                               "test split but have no training samples")
    single = labels[counts < 2]
    if single.size:
        raise DatasetError(f"{where}: class(es) {single.tolist()} have a single training sample; "
                           "every class needs at least 2 (DE-SNE needs neighbours)")


# --------------------------------------------------------------------------------------------
# loaders

def load_digits() -> Dataset:
    """scikit-learn's bundled 8×8 digits, split 75/25 (stratified, seed ``DIGITS_SPLIT_SEED``).

    Returns
    -------
    Dataset
        1347 training and 450 test images of shape (8, 8), grey levels 0..16 (``max_value=16``).
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_digits()
    X = bunch.images.astype(np.uint8)  # values are exact integers 0..16
    y = bunch.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=DIGITS_TEST_FRACTION, stratify=y,
                              random_state=DIGITS_SPLIT_SEED)
    tr, te = np.sort(tr), np.sort(te)  # keep the original file order inside each split
    return Dataset("digits", X[tr], y[tr], X[te], y[te], max_value=16,
                   source="sklearn.datasets.load_digits")


def read_idx(path) -> np.ndarray:
    """Read one IDX file (MNIST format), gzip-compressed or raw.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then one big-endian uint32 per
    dimension; the data follow, big-endian, C order. Compression is detected from the gzip
    magic bytes, not from the file name.

    Raises
    ------
    DatasetError
        Unreadable gzip, bad magic, unknown type code, truncated data or trailing bytes.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt or truncated gzip stream ({exc})") from None
    if len(raw) < 4:
        raise DatasetError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DatasetError(f"{path}: bad IDX magic {raw[:4].hex()}; expected 0000 followed by a "
                           "type code (08 for uint8) and the number of dimensions")
    ndim = raw[3]
    if ndim == 0:
        raise DatasetError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header} for "
                           f"{ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - header
    if have < need:
        raise DatasetError(f"{path}: truncated: header declares shape {dims} ({need} data bytes) "
                           f"but only {have} bytes follow")
    if have > need:
        raise DatasetError(f"{path}: {have - need} unexpected trailing bytes after the {dims} "
                           "array declared in the header")
    data = np.frombuffer(raw, dtype, count=need // dtype.itemsize, offset=header)
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, stem: str, kind: str) -> Path | None:
    """``train``/``t10k`` + ``images``/``labels`` in either common spelling, raw or ``.gz``."""
    rank = 3 if kind == "images" else 1
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            p = directory / f"{stem}-{kind}{sep}idx{rank}-ubyte{suffix}"
            if p.is_file():
                return p
    return None


def _read_idx_pair(directory: Path, stem: str):
    images = _find_idx(directory, stem, "images")
    labels = _find_idx(directory, stem, "labels")
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        have = images or labels
        missing = f"{stem}-labels-idx1-ubyte[.gz]" if labels is None else \
            f"{stem}-images-idx3-ubyte[.gz]"
        raise DatasetError(f"{directory}: found {have.name} but no matching {missing}")
    X, y = read_idx(images), read_idx(labels)
    if X.dtype != np.uint8 or X.ndim != 3:
        raise DatasetError(f"{images}: expected uint8 images of rank 3 (N, H, W), got {X.dtype} "
                           f"of shape {X.shape}")
    if y.dtype != np.uint8 or y.ndim != 1:
        raise DatasetError(f"{labels}: expected uint8 labels of rank 1, got {y.dtype} of shape "
                           f"{y.shape}")
    if len(X) != len(y):
        raise DatasetError(f"{images.name} holds {len(X)} images but {labels.name} holds "
                           f"{len(y)} labels (in {directory})")
    return X, y


def load_idx_dir(directory, *, name: str | None = None) -> Dataset:
    """Load an MNIST-style directory: ``train-{images-idx3,labels-idx1}-ubyte[.gz]`` and, if
    present, the ``t10k-*`` test pair.

    Parameters
    ----------
    directory : path
        Folder holding the IDX files.
    name : str, optional
        Report name; defaults to the folder name.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset directory {directory} does not exist")
    train = _read_idx_pair(directory, "train")
    if train is None:
        raise DatasetError(f"{directory}: no train-images-idx3-ubyte[.gz] / "
                           "train-labels-idx1-ubyte[.gz] found (MNIST/Fashion-MNIST IDX layout)")
    test = _read_idx_pair(directory, "t10k")
    Xt, yt = test if test is not None else (None, None)
    return Dataset(name or directory.resolve().name, train[0], train[1], Xt, yt, max_value=255,
                   source=str(directory))


def load_npz(path, *, name: str | None = None) -> Dataset:
    """Load a ``.npz`` archive.

    Keys: ``X_train`` (uint8-valued, (N, H, W) or (N, D)), ``y_train`` (integers, (N,)),
    optionally ``X_test`` + ``y_test`` (together) and ``max_value`` (scalar, default: the
    largest training pixel, at least 1). Other keys are an error (they usually mean a
    misspelt name). Pickled objects are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    allowed = {"X_train", "y_train", "X_test", "y_test", "max_value"}
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npz archive ({exc})") from None
    unknown = sorted(set(arrays) - allowed)
    if unknown:
        raise DatasetError(f"{path}: unexpected key(s) {unknown}; allowed keys are "
                           f"{sorted(allowed)}")
    for key in ("X_train", "y_train"):
        if key not in arrays:
            raise DatasetError(f"{path}: missing required array {key!r} (found {sorted(arrays)})")
    X = _check_pixels(arrays["X_train"], where=str(path), split="train")
    if "max_value" in arrays:
        mv = arrays["max_value"]
        if mv.shape != () or not np.issubdtype(mv.dtype, np.integer):
            raise DatasetError(f"{path}: max_value must be an integer scalar, got {mv.dtype} "
                               f"of shape {mv.shape}")
        max_value = int(mv)
    else:
        max_value = max(1, int(X.max()))
    return Dataset(name or path.stem, X, arrays["y_train"], arrays.get("X_test"),
                   arrays.get("y_test"), max_value=max_value, source=str(path))


def _load_npy_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"array file {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npy array ({exc})") from None


def load_npy(images, labels, *, name: str | None = None) -> Dataset:
    """Load a training set from two ``.npy`` files (images, labels); no test split.

    The maximum pixel value is taken from the data (at least 1).
    """
    images, labels = Path(images), Path(labels)
    X = _check_pixels(_load_npy_array(images), where=str(images), split="train")
    y = _load_npy_array(labels)
    return Dataset(name or images.stem, X, y, max_value=max(1, int(X.max())),
                   source=f"{images} + {labels}")


def load_dataset(spec, *, labels=None) -> Dataset:
    """One entry point for every source.

    Parameters
    ----------
    spec : str or path
        ``"digits"`` (bundled default), a directory of IDX files, a ``.npz`` archive, or a
        ``.npy`` image array (then ``labels`` is required).
    labels : str or path, optional
        ``.npy`` label array, only with a ``.npy`` ``spec``.
    """
    if isinstance(spec, Dataset):
        return spec
    if spec is None or str(spec) == "digits":
        if labels is not None:
            raise ValueError("labels= is only used with a .npy image array, not with 'digits'")
        return load_digits()
    path = Path(spec)
    if path.suffix == ".npy":
        if labels is None:
            raise ValueError(f"{path}: a .npy image array needs a .npy label array (labels=...)")
        return load_npy(path, labels)
    if labels is not None:
        raise ValueError(f"labels= is only used with a .npy image array, not with {path}")
    if path.is_dir():
        return load_idx_dir(path)
    if path.suffix == ".npz":
        return load_npz(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {spec!r} not found: give 'digits', a directory of "
                                "IDX files, a .npz file or a .npy image array")
    raise DatasetError(f"{path}: unsupported dataset file; give 'digits', a directory of IDX "
                       "files, a .npz file or a .npy image array")
