"""The fixed classifiers that score a coreset: a one-hidden-layer MLP and a small CNN (NumPy).

Coreset quality is measured as the accuracy of one of these models trained on the coreset only.
Everything about the models is fixed in advance (nothing is tuned on any test split) so methods
and ratios are compared on equal terms:

* input: pixels divided by the dataset's ``max_value`` (→ [0, 1]);
* ``mlp``: ``D → 256 ReLU → classes`` softmax, He-normal initialisation, zero biases;
* ``cnn``: ``conv3×3(1→8, same) ReLU maxpool2 → conv3×3(8→16, same) ReLU maxpool2 → dense →
  classes`` on the image (H, W) (flat vectors of a square length are reshaped to a square), float32,
  He-normal initialisation — small enough to train 1000 steps in a few seconds on one core;
* optimiser (both): Adam (lr 1e-3, β = (0.9, 0.999), ε = 1e-8), L2 weight decay 1e-4 on the
  weights;
* **budget rule: a fixed number of gradient steps** (default 1000) of minibatches of
  ``min(64, n)`` samples, drawn as successive random permutations of the coreset. Every ratio
  gets the same number of updates, so a small coreset is not under-trained relative to a large
  one (it simply sees each sample more often);
* optional per-sample weights (the DeepCore ``weights`` of a selection): the minibatch loss is
  the weighted mean ``Σ w_i ℓ_i / Σ w_i`` — how a selector's "this exemplar stands for w images"
  reaches the trainer;
* float32 arithmetic, all randomness from one ``numpy.random.Generator(seed)``: the same
  inputs and seed give the same model on the same machine.

Training and inference run with the BLAS limited to one thread: the minibatch products are
small, and on a loaded 2-core machine multi-threaded BLAS made a 300-step fit ~25× slower in
wall time (threads spinning while waiting for each other) for no gain.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

__all__ = ["MLPConfig", "CNNConfig", "MLPClassifier", "CNNClassifier", "TRAINERS",
           "make_classifier", "train_and_score", "train_and_score_many"]


def _check_common(cfg, int_names):
    for name in int_names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{type(cfg).__name__}.{name} must be an integer >= 1, got {v!r}")
    for name in ("learning_rate", "weight_decay"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v < 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be a finite number >= 0, got {v!r}")
    if cfg.learning_rate == 0:
        raise ValueError(f"{type(cfg).__name__}.learning_rate must be > 0")


@dataclass(frozen=True)
class MLPConfig:
    """Hyper-parameters of the MLP scorer (fixed a priori, see the module docstring)."""

    hidden: int = 256
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4

    def __post_init__(self):
        _check_common(self, ("hidden", "steps", "batch_size"))


@dataclass(frozen=True)
class CNNConfig:
    """Hyper-parameters of the CNN scorer: two 3×3 'same' conv layers of ``channels1`` and
    ``channels2`` filters, each followed by ReLU and 2×2 max-pooling, then a dense softmax."""

    channels1: int = 8
    channels2: int = 16
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4

    def __post_init__(self):
        _check_common(self, ("channels1", "channels2", "steps", "batch_size"))


class _AdamClassifier:
    """Shared fit/predict: Adam on a fixed step budget, optional per-sample loss weights."""

    config_type = MLPConfig

    def __init__(self, config=None, *, seed: int = 0):
        self.config = config or self.config_type()
        if not isinstance(self.config, self.config_type):
            raise TypeError(f"{type(self).__name__} needs a {self.config_type.__name__}, "
                            f"got {type(self.config).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.classes_ = None
        self.params = None
        self.max_value = None

    # subclasses: _inputs(X) -> A, _init(rng, A, k) -> params, _grads(params, A, t, wn), _logits
    def fit(self, X, y, *, max_value: float, classes=None, sample_weight=None):
        """Train on ``X`` (N, ...) pixels and integer labels ``y``.

        Parameters
        ----------
        max_value : float
            Pixel scale: inputs are divided by it (the dataset's ``max_value``).
        classes : array_like, optional
            All labels the model must output (default: those in ``y``). Pass the full label set
            when a coreset could miss a class.
        sample_weight : array_like, optional
            Positive finite per-sample loss weights (default: all 1).
        """
        if not (isinstance(max_value, numbers.Real) and max_value > 0):
            raise ValueError(f"max_value must be a positive number, got {max_value!r}")
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim < 2 or X.shape[0] == 0 or y.shape != (X.shape[0],):
            raise ValueError(f"need X (N, D) with N >= 1 and y (N,), got {X.shape} and {y.shape}")
        if sample_weight is None:
            sw = np.ones(len(y), np.float32)
        else:
            sw = np.asarray(sample_weight, dtype=np.float64)
            if sw.shape != y.shape or not np.all(np.isfinite(sw)) or np.any(sw <= 0):
                raise ValueError(f"sample_weight must be {y.shape} positive finite numbers")
            sw = sw.astype(np.float32)
        self.max_value = float(max_value)
        self.classes_ = np.unique(y) if classes is None else np.unique(np.asarray(classes))
        target = np.searchsorted(self.classes_, y)
        if np.any(target >= len(self.classes_)) or np.any(self.classes_[np.minimum(
                target, len(self.classes_) - 1)] != y):
            raise ValueError("y contains labels not listed in classes")
        A = self._inputs(X)
        rng = np.random.default_rng(self.seed)
        k = len(self.classes_)
        with threadpool_limits(limits=1, user_api="blas"):
            params = self._init(rng, A, k)
            self.params = self._train(params, A, target, sw, rng)
        return self

    def _train(self, params, A, target, sw, rng):
        cfg, n, pos = self.config, len(A), 0
        bs = min(cfg.batch_size, n)
        order = rng.permutation(n)
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-8
        decay = self._decayed
        for step in range(1, cfg.steps + 1):
            if pos + bs > n:
                order, pos = rng.permutation(n), 0
            idx = order[pos:pos + bs]
            pos += bs
            w = sw[idx]
            grads = self._grads(params, A[idx], target[idx], w / w.sum())
            for j, (p, g) in enumerate(zip(params, grads)):
                if j in decay:
                    g = g + np.float32(cfg.weight_decay) * p
                m[j] = b1 * m[j] + (1 - b1) * g
                v[j] = b2 * v[j] + (1 - b2) * g * g
                mhat = m[j] / (1 - b1 ** step)
                vhat = v[j] / (1 - b2 ** step)
                p -= (cfg.learning_rate * mhat / (np.sqrt(vhat) + eps)).astype(np.float32)
        return params

    @staticmethod
    def _softmax_grad(Z, t, wn):
        Z = Z - Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=1, keepdims=True)
        P[np.arange(len(t)), t] -= 1.0
        return (P * wn[:, None]).astype(np.float32)  # weighted mean cross-entropy

    def decision_function(self, X, *, batch: int = 2048) -> np.ndarray:
        if self.params is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        X = np.asarray(X)
        with threadpool_limits(limits=1, user_api="blas"):
            return np.concatenate([self._logits(self.params, self._inputs(X[i:i + batch]))
                                   for i in range(0, len(X), batch)]) if len(X) else \
                np.zeros((0, len(self.classes_)), np.float32)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X, y) -> float:
        """Accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


class MLPClassifier(_AdamClassifier):
    """One-hidden-layer ReLU MLP trained with Adam for a fixed number of steps.

    Parameters
    ----------
    config : MLPConfig, optional
    seed : int
        Seeds initialisation and minibatch order.
    """

    config_type = MLPConfig
    _decayed = (0, 2)

    def _inputs(self, X) -> np.ndarray:
        X = np.asarray(X)
        X = X.reshape(X.shape[0], -1)
        return X.astype(np.float32) / np.float32(self.max_value)

    def _init(self, rng, A, k):
        d, h = A.shape[1], self.config.hidden
        W1 = (rng.standard_normal((d, h)) * np.sqrt(2.0 / d)).astype(np.float32)
        W2 = (rng.standard_normal((h, k)) * np.sqrt(2.0 / h)).astype(np.float32)
        return [W1, np.zeros(h, np.float32), W2, np.zeros(k, np.float32)]

    def _grads(self, params, A, t, wn):
        W1, c1, W2, c2 = params
        H = np.maximum(A @ W1 + c1, 0.0)
        dZ = self._softmax_grad(H @ W2 + c2, t, wn)
        dH = (dZ @ W2.T) * (H > 0)
        return [A.T @ dH, dH.sum(axis=0), H.T @ dZ, dZ.sum(axis=0)]

    @staticmethod
    def _logits(params, A):
        W1, c1, W2, c2 = params
        return np.maximum(A @ W1 + c1, 0.0) @ W2 + c2


def _im2col3(x):
    """(n, H, W, C) -> (n·H·W, 9·C) patches of a 3×3 'same' convolution (zero padding),
    columns ordered (row offset, column offset, channel). Only data movement, so the two ways
    of gathering (chosen by speed: nine slice copies for one channel, one windowed transpose-copy
    otherwise) give the same array."""
    n, h, w, c = x.shape
    xp = np.zeros((n, h + 2, w + 2, c), x.dtype)
    xp[:, 1:-1, 1:-1, :] = x
    if c == 1:
        cols = np.empty((n, h, w, 3, 3, c), x.dtype)
        for a in range(3):
            for b in range(3):
                cols[:, :, :, a, b, :] = xp[:, a:a + h, b:b + w, :]
        return cols.reshape(n * h * w, 9 * c)
    win = sliding_window_view(xp, (3, 3), axis=(1, 2))  # (n, H, W, C, 3, 3)
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n * h * w, 9 * c)


def _conv3_input_grad(dz, K, c_in):
    """Gradient w.r.t. the input of a 3×3 'same' convolution with kernel ``K`` (9·c_in, c_out):
    the 'same' convolution of ``dz`` (n, H, W, c_out) with the flipped, transposed kernel."""
    c_out = K.shape[1]
    flipped = K.reshape(3, 3, c_in, c_out)[::-1, ::-1].transpose(0, 1, 3, 2).reshape(9 * c_out, c_in)
    n, h, w, _ = dz.shape
    return (_im2col3(dz) @ flipped).reshape(n, h, w, c_in)


def _pool2(x):
    """2×2 max-pooling (odd trailing row/column dropped); returns the output and the mask of
    window maxima. Ties within a window can only occur between equal ReLU outputs; for the
    usual tie (all 0) the ReLU mask stops the gradient anyway."""
    n, h, w, c = x.shape
    r = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c)
    # three elementwise maxima: exact like max(axis=(2, 4)), ~5x faster on these strides
    out = np.maximum(np.maximum(r[:, :, 0, :, 0], r[:, :, 0, :, 1]),
                     np.maximum(r[:, :, 1, :, 0], r[:, :, 1, :, 1]))
    return out, r == out[:, :, None, :, None, :]


def _unpool2(dy, mask, shape):
    n, h, w, c = shape
    out = np.zeros(shape, np.float32)
    out[:, : h // 2 * 2, : w // 2 * 2, :] = (mask * dy[:, :, None, :, None, :]).reshape(
        n, h // 2 * 2, w // 2 * 2, c)
    return out


class CNNClassifier(_AdamClassifier):
    """Small two-layer CNN (see :class:`CNNConfig`) trained with Adam for a fixed number of steps.

    Inputs are (N, H, W) images or flat (N, D) vectors with D a perfect square.
    """

    config_type = CNNConfig
    _decayed = (0, 2, 4)

    def _inputs(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 2:
            side = math.isqrt(X.shape[1])
            if side * side != X.shape[1]:
                raise ValueError(f"the CNN needs square images; a flat vector of length "
                                 f"{X.shape[1]} is not one (give (N, H, W) images)")
            X = X.reshape(len(X), side, side)
        if X.ndim != 3 or min(X.shape[1:]) < 4:
            raise ValueError(f"the CNN needs (N, H, W) images with H, W >= 4, got {X.shape}")
        return (X.astype(np.float32) / np.float32(self.max_value))[..., None]

    def _init(self, rng, A, k):
        c1, c2 = self.config.channels1, self.config.channels2
        h, w = A.shape[1] // 2 // 2, A.shape[2] // 2 // 2
        d = h * w * c2

        def he(shape, fan_in):
            return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

        return [he((9, c1), 9), np.zeros(c1, np.float32), he((9 * c1, c2), 9 * c1),
                np.zeros(c2, np.float32), he((d, k), d), np.zeros(k, np.float32)]

    @staticmethod
    def _forward(params, A):
        K1, b1, K2, b2, W3, b3 = params
        n, h, w, _ = A.shape
        cols1 = _im2col3(A)
        z1 = (cols1 @ K1 + b1).reshape(n, h, w, -1)
        a1 = np.maximum(z1, 0.0)
        p1, m1 = _pool2(a1)
        cols2 = _im2col3(p1)
        z2 = (cols2 @ K2 + b2).reshape(p1.shape[:3] + (-1,))
        a2 = np.maximum(z2, 0.0)
        p2, m2 = _pool2(a2)
        flat = p2.reshape(n, -1)
        return flat @ W3 + b3, (cols1, z1, a1.shape, m1, p1.shape, cols2, z2, a2.shape, m2, flat)

    def _grads(self, params, A, t, wn):
        K1, b1, K2, b2, W3, b3 = params
        logits, (cols1, z1, s1, m1, sp1, cols2, z2, s2, m2, flat) = self._forward(params, A)
        dZ = self._softmax_grad(logits, t, wn)
        dW3, db3 = flat.T @ dZ, dZ.sum(0)
        dp2 = (dZ @ W3.T).reshape(m2.shape[0], m2.shape[1], m2.shape[3], m2.shape[5])
        dz2 = _unpool2(dp2, m2, s2) * (z2 > 0)
        dz2f = dz2.reshape(-1, dz2.shape[-1])
        dK2, db2 = cols2.T @ dz2f, dz2f.sum(0)
        dp1 = _conv3_input_grad(dz2, K2, sp1[3])
        dz1 = _unpool2(dp1, m1, s1) * (z1 > 0)
        dz1f = dz1.reshape(-1, dz1.shape[-1])
        dK1, db1 = cols1.T @ dz1f, dz1f.sum(0)
        return [dK1, db1, dK2, db2, dW3, db3]

    @classmethod
    def _logits(cls, params, A):
        return cls._forward(params, A)[0]


#: trainer name -> (classifier class, config class)
TRAINERS = {"mlp": (MLPClassifier, MLPConfig), "cnn": (CNNClassifier, CNNConfig)}


def make_classifier(trainer: str = "mlp", *, steps: int | None = None, seed: int = 0):
    """A fresh scorer by name (``"mlp"`` or ``"cnn"``) with the fixed configuration
    (optionally another step budget)."""
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {sorted(TRAINERS)}, not {trainer!r}")
    cls, cfg_cls = TRAINERS[trainer]
    cfg = cfg_cls() if steps is None else cfg_cls(steps=steps)
    return cls(cfg, seed=seed)


def train_and_score(X_train, y_train, X_test, y_test, *, max_value: float, classes=None,
                    config: MLPConfig | CNNConfig | None = None, seed: int = 0,
                    sample_weight=None) -> float:
    """Train the fixed scorer (MLP, or the CNN for a :class:`CNNConfig`) on a (coreset)
    training set and return its accuracy on ``(X_test, y_test)``."""
    cls = CNNClassifier if isinstance(config, CNNConfig) else MLPClassifier
    model = cls(config, seed=seed).fit(X_train, y_train, max_value=max_value, classes=classes,
                                       sample_weight=sample_weight)
    return model.score(X_test, y_test)


def train_and_score_many(X_train, y_train, evals: dict, *, max_value: float, classes=None,
                         config: MLPConfig | CNNConfig | None = None, seed: int = 0,
                         sample_weight=None) -> dict:
    """Train once and score on every ``name -> (X, y)`` of ``evals`` (e.g. validation and test)."""
    cls = CNNClassifier if isinstance(config, CNNConfig) else MLPClassifier
    model = cls(config, seed=seed).fit(X_train, y_train, max_value=max_value, classes=classes,
                                       sample_weight=sample_weight)
    return {name: model.score(X, y) for name, (X, y) in evals.items()}
