"""Online sample streams for the adaptation scenarios (section 6.2 of ``lrt.md``).

A stream is a sequence of images with pixel values in [0, 1], stored as 8-bit input codes
(``round(256 x)`` clipped to 255, the network's input quantiser) and labels. Scenarios:

* ``control`` — images drawn in a seeded random order from a pool (each pass a new permutation);
* ``shift`` — 10 equal blocks with the paper's augmentations: CD | ST | BG | WN | ST+WN | ST+BG |
  BG+WN | ST+BG+WN | CD+ST+BG+WN | none, where
  CD = class-distribution clustering (segments of 500 samples favour a random centre class:
  probability ``(1 - eps) exp(-d^2 / 2 spread^2) / Z + eps / K`` with ``d`` the circular class
  distance, spread 1.0, eps 0.3; our reading of the paper's parameters),
  ST = random affine (log-scale std 0.1 in x and y, rotation std 10 deg, translation std 2 px
  at 28 px, scaled with the image size),
  BG = contrast U[0.3, 1], offset U[0, 0.7] and a planar gradient whose corner-to-corner
  deviation is up to 0.5 (``x' = o + (1 - o) c x + g``),
  WN = per-image Gaussian noise with std log-uniform in [0.03, 0.3];
  results are clipped to [0, 1];
* ``analog-drift`` / ``digital-drift`` — the control stream; the drift acts on the weights
  (:mod:`nms.sw.drift`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SCENARIOS", "SHIFT_BLOCKS", "Stream", "make_stream", "spatial_transform",
           "background", "white_noise", "clustered_classes"]

SCENARIOS = ("control", "shift", "analog-drift", "digital-drift")
SHIFT_BLOCKS = ("CD", "ST", "BG", "WN", "ST+WN", "ST+BG", "BG+WN", "ST+BG+WN", "CD+ST+BG+WN", "none")


class Stream:
    """An online stream: ``codes`` (N, H, W) uint8 input codes, ``y`` (N,) labels, ``blocks``.

    ``blocks`` lists ``(start, stop, name)`` of the shift blocks (one block for the other
    scenarios). :meth:`x` returns sample ``i`` as the network's (1, H, W) float input.
    """

    def __init__(self, codes: np.ndarray, y: np.ndarray, blocks: list, scenario: str):
        self.codes, self.y, self.blocks, self.scenario = codes, y, blocks, scenario

    def __len__(self) -> int:
        return len(self.y)

    def x(self, i: int) -> np.ndarray:
        return self.codes[i][None].astype(np.float64) * (1.0 / 256.0)


def _to_codes(img01: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(img01 * 256.0 + 0.5), 0, 255).astype(np.uint8)


def spatial_transform(imgs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random affine per image (bilinear, zero fill), parameters as the paper's ST at 28 px."""
    from scipy.ndimage import affine_transform

    n, h, w = imgs.shape
    px = h / 28.0
    out = np.empty_like(imgs)
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    for i in range(n):
        sy, sx = np.exp(rng.normal(0.0, 0.1, 2))
        th = math.radians(rng.normal(0.0, 10.0))
        c, s = math.cos(th), math.sin(th)
        A = np.array([[c, -s], [s, c]]) @ np.diag([sy, sx])  # output = A (input - centre) + centre + t
        t = rng.normal(0.0, 2.0 * px, 2)
        Ainv = np.linalg.inv(A)
        offset = centre - Ainv @ (centre + t)
        out[i] = affine_transform(imgs[i], Ainv, offset=offset, order=1, mode="constant", cval=0.0)
    return out


def background(imgs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast, offset and a planar gradient background (BG)."""
    n, h, w = imgs.shape
    c = rng.uniform(0.3, 1.0, (n, 1, 1))
    o = rng.uniform(0.0, 0.7, (n, 1, 1))
    ang = rng.uniform(0.0, 2 * math.pi, (n, 1, 1))
    dev = rng.uniform(0.0, 0.5, (n, 1, 1))
    yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, h), np.linspace(-0.5, 0.5, w), indexing="ij")
    # unit-norm direction; the plane spans +-dev/2 between opposite corners along it
    plane = (np.cos(ang) * yy + np.sin(ang) * xx) / math.sqrt(0.5) * dev
    return np.clip(o + (1.0 - o) * c * imgs + plane, 0.0, 1.0)


def white_noise(imgs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-image Gaussian noise, std log-uniform in [0.03, 0.3] (WN)."""
    n = imgs.shape[0]
    sd = np.exp(rng.uniform(math.log(0.03), math.log(0.3), (n, 1, 1)))
    return np.clip(imgs + rng.normal(0.0, 1.0, imgs.shape) * sd, 0.0, 1.0)


def clustered_classes(n: int, n_classes: int, rng: np.random.Generator, *, spread: float = 1.0,
                      eps: float = 0.3, segment: int = 500) -> np.ndarray:
    """Class sequence with a clustered class distribution (CD)."""
    out = np.empty(n, dtype=np.int64)
    ks = np.arange(n_classes)
    for s in range(0, n, segment):
        centre = rng.integers(n_classes)
        d = np.minimum(np.abs(ks - centre), n_classes - np.abs(ks - centre))
        p = np.exp(-d ** 2 / (2 * spread ** 2))
        p = (1 - eps) * p / p.sum() + eps / n_classes
        out[s:s + segment] = rng.choice(n_classes, size=min(segment, n - s), p=p)
    return out


def _draw(pool_y: np.ndarray, n: int, rng, classes: np.ndarray | None) -> np.ndarray:
    """Pool indices: a cycle of permutations, or per-class draws for a given class sequence."""
    if classes is None:
        reps = -(-n // len(pool_y))
        return np.concatenate([rng.permutation(len(pool_y)) for _ in range(reps)])[:n]
    idx = np.empty(n, dtype=np.int64)
    by_class = {c: np.flatnonzero(pool_y == c) for c in np.unique(pool_y)}
    for c, members in by_class.items():
        where = np.flatnonzero(classes == c)
        idx[where] = rng.choice(members, size=where.size, replace=True)
    return idx


def make_stream(X: np.ndarray, y: np.ndarray, *, scenario: str, n_samples: int, max_value: int,
                seed: int) -> Stream:
    """Build the online stream of ``scenario`` from a pool of raw images.

    Parameters
    ----------
    X : ndarray, shape (N, H, W)
        Pool images (raw pixel values ``0 .. max_value``).
    y : ndarray, shape (N,)
        Pool labels.
    scenario : str
        One of :data:`SCENARIOS`.
    n_samples : int
        Stream length (the pool is cycled through in fresh permutations).
    max_value : int
        The data's maximum pixel value (255 for Fashion-MNIST, 16 for digits).
    seed : int
        Stream seed (order and augmentations).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    X = np.asarray(X)
    if X.ndim != 3 or len(X) != len(y) or len(X) == 0:
        raise ValueError(f"the stream pool must be (N, H, W) images with N labels, got {X.shape}")
    rng = np.random.default_rng([seed, 7])
    n_classes = int(np.max(y)) + 1
    if scenario != "shift":
        idx = _draw(y, n_samples, rng, None)
        return Stream(_to_codes(X[idx] / float(max_value)), np.asarray(y)[idx],
                      [(0, n_samples, scenario)], scenario)
    codes = np.empty((n_samples,) + X.shape[1:], dtype=np.uint8)
    labels = np.empty(n_samples, dtype=np.int64)
    blocks = []
    edges = np.linspace(0, n_samples, len(SHIFT_BLOCKS) + 1).round().astype(int)
    for name, a, b in zip(SHIFT_BLOCKS, edges[:-1], edges[1:]):
        parts = name.split("+")
        classes = clustered_classes(b - a, n_classes, rng) if "CD" in parts else None
        idx = _draw(y, b - a, rng, classes)
        img = X[idx] / float(max_value)
        if "ST" in parts:
            img = spatial_transform(img, rng)
        if "BG" in parts:
            img = background(img, rng)
        if "WN" in parts:
            img = white_noise(img, rng)
        codes[a:b] = _to_codes(img)
        labels[a:b] = np.asarray(y)[idx]
        blocks.append((int(a), int(b), name))
    return Stream(codes, labels, blocks, scenario)
