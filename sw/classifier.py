"""The fixed classifier that scores a coreset: a one-hidden-layer NumPy MLP.

Coreset quality is measured as the test accuracy of this model trained on the coreset only.
Everything about the model is fixed in advance (nothing is tuned on any test split) so methods
and ratios are compared on equal terms:

* input: flattened pixels divided by the dataset's ``max_value`` (→ [0, 1]);
* network: ``D → 256 ReLU → classes`` softmax, He-normal initialisation, zero biases;
* optimiser: Adam (lr 1e-3, β = (0.9, 0.999), ε = 1e-8), L2 weight decay 1e-4 on the weights;
* **budget rule: a fixed number of gradient steps** (default 1000) of minibatches of
  ``min(64, n)`` samples, drawn as successive random permutations of the coreset. Every ratio
  gets the same number of updates, so a small coreset is not under-trained relative to a large
  one (it simply sees each sample more often);
* float32 arithmetic, all randomness from one ``numpy.random.Generator(seed)``: the same
  inputs and seed give the same model on the same machine.

Training and inference run with the BLAS limited to one thread: the minibatch products are
small, and on a loaded 2-core machine multi-threaded BLAS made a 300-step fit ~25× slower in
wall time (threads spinning while waiting for each other) for no gain.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

__all__ = ["MLPConfig", "MLPClassifier", "train_and_score"]


@dataclass(frozen=True)
class MLPConfig:
    """Hyper-parameters of the scoring classifier (fixed a priori, see the module docstring)."""

    hidden: int = 256
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4

    def __post_init__(self):
        for name in ("hidden", "steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"MLPConfig.{name} must be an integer >= 1, got {v!r}")
        for name in ("learning_rate", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v < 0:
                raise ValueError(f"MLPConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.learning_rate == 0:
            raise ValueError("MLPConfig.learning_rate must be > 0")


class MLPClassifier:
    """One-hidden-layer ReLU MLP trained with Adam for a fixed number of steps.

    Parameters
    ----------
    config : MLPConfig, optional
    seed : int
        Seeds initialisation and minibatch order.
    """

    def __init__(self, config: MLPConfig | None = None, *, seed: int = 0):
        self.config = config or MLPConfig()
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.classes_ = None
        self.params = None
        self.max_value = None

    def _inputs(self, X) -> np.ndarray:
        X = np.asarray(X)
        X = X.reshape(X.shape[0], -1)
        return X.astype(np.float32) / np.float32(self.max_value)

    def fit(self, X, y, *, max_value: float, classes=None) -> "MLPClassifier":
        """Train on ``X`` (N, D) pixels and integer labels ``y``.

        Parameters
        ----------
        max_value : float
            Pixel scale: inputs are divided by it (the dataset's ``max_value``).
        classes : array_like, optional
            All labels the model must output (default: those in ``y``). Pass the full label set
            when a coreset could miss a class.
        """
        if not (isinstance(max_value, numbers.Real) and max_value > 0):
            raise ValueError(f"max_value must be a positive number, got {max_value!r}")
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim < 2 or X.shape[0] == 0 or y.shape != (X.shape[0],):
            raise ValueError(f"need X (N, D) with N >= 1 and y (N,), got {X.shape} and {y.shape}")
        self.max_value = float(max_value)
        self.classes_ = np.unique(y) if classes is None else np.unique(np.asarray(classes))
        target = np.searchsorted(self.classes_, y)
        if np.any(target >= len(self.classes_)) or np.any(self.classes_[np.minimum(
                target, len(self.classes_) - 1)] != y):
            raise ValueError("y contains labels not listed in classes")
        A = self._inputs(X)
        n, d = A.shape
        k, h = len(self.classes_), self.config.hidden
        cfg = self.config
        rng = np.random.default_rng(self.seed)
        W1 = (rng.standard_normal((d, h)) * np.sqrt(2.0 / d)).astype(np.float32)
        W2 = (rng.standard_normal((h, k)) * np.sqrt(2.0 / h)).astype(np.float32)
        params = [W1, np.zeros(h, np.float32), W2, np.zeros(k, np.float32)]
        bs = min(cfg.batch_size, n)
        order = rng.permutation(n)
        with threadpool_limits(limits=1, user_api="blas"):
            self.params = self._train(params, A, target, k, rng, order, bs)
        return self

    def _train(self, params, A, target, k, rng, order, bs):
        cfg, n, pos = self.config, len(A), 0
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-8
        for step in range(1, cfg.steps + 1):
            if pos + bs > n:
                order, pos = rng.permutation(n), 0
            idx = order[pos:pos + bs]
            pos += bs
            grads = self._gradients(params, A[idx], target[idx], k)
            for j, (p, g) in enumerate(zip(params, grads)):
                if j in (0, 2):
                    g = g + np.float32(cfg.weight_decay) * p
                m[j] = b1 * m[j] + (1 - b1) * g
                v[j] = b2 * v[j] + (1 - b2) * g * g
                mhat = m[j] / (1 - b1 ** step)
                vhat = v[j] / (1 - b2 ** step)
                p -= (cfg.learning_rate * mhat / (np.sqrt(vhat) + eps)).astype(np.float32)
        return params

    @staticmethod
    def _gradients(params, A, t, k):
        W1, c1, W2, c2 = params
        H = np.maximum(A @ W1 + c1, 0.0)
        Z = H @ W2 + c2
        Z -= Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=1, keepdims=True)
        P[np.arange(len(t)), t] -= 1.0
        dZ = P / np.float32(len(t))  # mean cross-entropy
        dH = (dZ @ W2.T) * (H > 0)
        return [A.T @ dH, dH.sum(axis=0), H.T @ dZ, dZ.sum(axis=0)]

    def decision_function(self, X) -> np.ndarray:
        if self.params is None:
            raise RuntimeError("MLPClassifier is not fitted; call fit() first")
        W1, c1, W2, c2 = self.params
        A = self._inputs(X)
        with threadpool_limits(limits=1, user_api="blas"):
            return np.maximum(A @ W1 + c1, 0.0) @ W2 + c2

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X, y) -> float:
        """Accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


def train_and_score(X_train, y_train, X_test, y_test, *, max_value: float, classes=None,
                    config: MLPConfig | None = None, seed: int = 0) -> float:
    """Train the fixed MLP on a (coreset) training set and return its test accuracy."""
    model = MLPClassifier(config, seed=seed).fit(X_train, y_train, max_value=max_value,
                                                 classes=classes)
    return model.score(X_test, y_test)
