"""Low-rank (SKS) training and per-sample SGD on NVM-style quantised weights, with write counting.

Two online trainers over the same quantised networks (:mod:`nms.sw.nn`), both batch size 1:

* :class:`SKSTrainer` — every sample's weight-gradient terms stream into one rank-r
  :class:`~nms.sw.sks.SKS` state per layer (one term per sample for dense layers, one per output
  pixel for conv layers). Every B samples (B per layer type) the layer tries ONE weight write:
  ``mult <- mult * discount + B``; ``L~, R~ = grab()`` (optionally max-normed);
  ``eta = lr * mult**0.5``; ``dW = Q(eta L~ R~^T)``; the write is applied only if more than a
  fraction ``rho_min`` of the cells would change, then the SKS state and ``mult`` reset; otherwise
  the state keeps accumulating (and ``mult`` keeps growing). Conv layers add a sample's pixel
  terms as one block by default (``conv_mode="sample"``; ``"pixel"`` streams them one by one).
* :class:`BatchedTrainer` — the same flush rule on the EXACT gradient sum of the B samples (a
  full n x m accumulator): the full-rank batched baseline.
* :class:`SGDTrainer` — the baseline: every sample writes ``dW = Q(lr * grad_W)`` into the same
  quantised weights (sub-half-LSB updates vanish). Write counting as in the authors' code: dense
  layers count cells whose quantised update is nonzero; conv layers count per output pixel (their
  ``count_version 2``: a cell is written at each pixel where both its input and its output error
  are nonzero, i.e. hardware that writes every pixel's outer product).
* :class:`BiasOnlyTrainer` (biases and streaming-BN gamma/beta only) and
  :class:`InferenceTrainer` (nothing learns) — the reference points of the adaptation scenarios.

Every trainer keeps two write counts per weight cell: ``writes`` (the paper's count: cells with a
nonzero quantised increment per applied update; SGD conv layers per pixel) and
``writes_changed`` (cells whose stored value changed). Biases and BN parameters (16-bit,
high-endurance memory) are updated every sample and are not counted.
:func:`train_sks` and :func:`train_sgd` are the driver-facing entry points and return the same
dictionary shape.
"""

from __future__ import annotations

import time

import numpy as np

from nms.sw.nn import Network, QuantConfig, build_model
from nms.sw.sks import SKS

__all__ = ["MaxNorm", "InferenceTrainer", "BiasOnlyTrainer", "SKSTrainer", "BatchedTrainer",
           "SGDTrainer", "prepare_inputs", "train_sks", "train_sgd"]

_MODELS = ("mlp", "cnn", "lrt-cnn")


class MaxNorm:
    """Gradient max-norm (App. D of Gural et al.): divide by a running, bias-corrected max.

    Parameters
    ----------
    beta : float, keyword-only
        Decay of the running max (0.999).
    eps : float, keyword-only
        Floor added to each max (1e-4).
    """

    def __init__(self, *, beta: float = 0.999, eps: float = 1e-4):
        self.beta, self.eps, self.t, self.x_mv = beta, eps, 0, eps

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.t += 1
        x_max = float(np.max(np.abs(x))) + self.eps if np.size(x) else self.eps
        self.x_mv = self.beta * self.x_mv + (1 - self.beta) * x_max
        # Bias-corrected running max; dividing by the larger of it and the current max bounds
        # every output by 1 while damping a single outlier sample.
        return x / max(x_max, self.x_mv / (1 - self.beta ** self.t))


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _check_float(name: str, value, lo: float, hi: float = np.inf, *, lo_open=False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not (lo < v if lo_open else lo <= v) or not v <= hi or not np.isfinite(v):
        rng = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise ValueError(f"{name} must be in {rng}, got {value!r}")
    return v


def prepare_inputs(X: np.ndarray, *, model: str, image_shape=None, scale: float) -> np.ndarray:
    """Reshape raw uint8-style inputs for ``model`` and normalise them to [0, 1] by ``scale``.

    Parameters
    ----------
    X : ndarray
        ``(N, H, W)`` images or ``(N, D)`` flattened samples, non-negative.
    model : {"mlp", "cnn"}
        The MLP takes ``(N, D)``; the CNN takes ``(N, 1, H, W)``.
    image_shape : tuple of int or None
        ``(H, W)`` for flattened inputs to the CNN (inferred for square D when None).
    scale : float
        The data's maximum value (16 for sklearn digits, 255 for Fashion-MNIST).
    """
    X = np.asarray(X)
    if X.ndim not in (2, 3) or X.shape[0] == 0:
        raise ValueError(f"X must be (N, H, W) or (N, D) with N >= 1, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"X must be a real numeric array, got dtype {X.dtype}")
    if X.min() < 0:
        raise ValueError(f"X must be non-negative (raw pixel values), minimum is {X.min()}")
    Xf = X.astype(np.float64) / float(scale)
    if model == "mlp":
        return Xf.reshape(len(Xf), -1)
    if X.ndim == 3:
        hw = X.shape[1:]
        if image_shape is not None and tuple(image_shape) != hw:
            raise ValueError(f"image_shape {tuple(image_shape)} does not match X's {hw}")
    else:
        d = X.shape[1]
        if image_shape is None:
            side = int(round(np.sqrt(d)))
            if side * side != d:
                raise ValueError(f"cannot infer image_shape for D={d} (not square); pass image_shape")
            hw = (side, side)
        else:
            hw = tuple(int(v) for v in image_shape)
            if len(hw) != 2 or hw[0] * hw[1] != d:
                raise ValueError(f"image_shape {image_shape!r} does not multiply to D={d}")
    return Xf.reshape(len(Xf), 1, *hw)


class _Trainer:
    """Online training loop shared by every scheme (predict, then learn, one sample at a time).

    Write counting, two views per weight cell (biases excluded):

    * ``writes`` — the paper's count: for each applied update, every cell whose quantised
      increment ``Q(dW)`` is nonzero (SGD conv layers: one per output pixel, see
      :class:`SGDTrainer`);
    * ``writes_changed`` — cells whose stored value actually changed.

    A write programs only the cells with a nonzero quantised increment; the new value is
    ``Qw(Qw(W) - Q(dW))`` (saturating at the range ends; ``Qw(W)`` is the read value, which
    differs from the stored one only after analog drift).
    """

    method = "?"
    learns = True  # False: no backward pass at all (inference only)

    def __init__(self, net: Network, *, lr_bias: float, maxnorm: bool, seed: int,
                 train_bias: bool = True):
        self.net = net
        self.q = net.q
        self.lr_bias = lr_bias
        self.maxnorm = maxnorm
        self.train_bias = bool(train_bias)
        self.rng = np.random.default_rng(seed)
        self.writes = [np.zeros(l.W.shape, dtype=np.int64) for l in net.weight_layers]
        self.writes_changed = [np.zeros(l.W.shape, dtype=np.int64) for l in net.weight_layers]
        self._mn_bias = [MaxNorm() for _ in net.weight_layers]
        self._mn_norm = [(MaxNorm(), MaxNorm()) for _ in net.norm_layers]
        self.samples_seen = 0
        self.history: list[dict] = []
        self.seconds = 0.0

    # --- one sample ---------------------------------------------------------------------------
    def _bias_step(self, i: int, layer) -> None:
        if not self.train_bias:
            return
        g = layer.grad_b
        if self.maxnorm:
            g = self._mn_bias[i](g)
        layer.b = self.q["b"](layer.b - self.q["b"].round(self.lr_bias * g))

    def _norm_step(self) -> None:
        """Streaming-BN gamma and beta: trained every sample with the bias learning rate."""
        if not self.train_bias:
            return
        qb = self.q["b"]
        for bn, (mg, mb) in zip(self.net.norm_layers, self._mn_norm):
            gg, gb = bn.grad_gamma, bn.grad_beta
            if self.maxnorm:
                gg, gb = mg(gg), mb(gb)
            bn.gamma = qb(bn.gamma - qb.round(self.lr_bias * gg))
            bn.beta = qb(bn.beta - qb.round(self.lr_bias * gb))

    def _write(self, layer, dW: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """New stored weights for the increment ``dW``.

        Returns
        -------
        new : ndarray
            Weights after the write.
        written : ndarray of bool
            Cells with a nonzero quantised increment (the paper's write count).
        changed : ndarray of bool
            Cells whose stored value changed (a saturated cell pushed further does not).
        """
        qw = self.q["w"]
        # As the authors' code (lrt.md section 8): the increment is masked by the weight
        # quantiser's straight-through clip mask (a cell whose read code is outside the 8-bit
        # range -- only possible after analog drift pushed it towards +1 -- is not updated) and
        # quantised with the weight quantiser itself, i.e. rounded AND clipped to [-1, 1 - LSB].
        mask = layer.read_mask()
        dq = qw(dW) if mask is True else mask * qw(dW)
        written = dq != 0
        # only the written cells are re-quantised (per-sample SGD writes few of them); the read
        # value Qw(W) is cached by the layer
        idx = np.flatnonzero(written)
        new = layer.W.copy()
        new.flat[idx] = qw(layer.read_W().flat[idx] - dq.flat[idx])
        return new, written, new != layer.W

    def _learn(self) -> None:
        raise NotImplementedError

    def step(self, x: np.ndarray, y: int) -> bool:
        """Predict one pre-processed sample ``x`` (``input_shape``), then learn from its label.

        Returns
        -------
        bool
            Whether the prediction (made before learning) was correct.
        """
        logits = self.net.forward(x[None], train=True)
        correct = bool(logits[0].argmax() == y)
        if self.learns:
            self.net.backward(logits, np.array([y]))
            self._learn()
        self.samples_seen += 1
        return correct

    def fit(self, X: np.ndarray, y: np.ndarray, *, epochs: int, X_eval=None, y_eval=None,
            eval_every: int | None = None, progress: bool = False) -> "_Trainer":
        """Stream ``(X[i], y[i])`` for ``epochs`` passes in a seeded random order.

        Parameters
        ----------
        X, y : ndarray
            Pre-processed inputs (see :func:`prepare_inputs`) and integer labels.
        epochs : int
            Passes over the data.
        X_eval, y_eval : ndarray, optional
            Held-out set scored at each history point.
        eval_every : int, optional
            Samples between history points (default: 20 points over the run).
        progress : bool
            Show a tqdm bar.
        """
        epochs = _check_int("epochs", epochs, 1)
        total = epochs * len(X)
        every = eval_every or max(1, total // 20)
        ema, ema_t = 0.0, 0  # bias-corrected EMA (0.99) of online predict-then-learn correctness
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, desc=self.method, unit="sample")
        t0 = time.perf_counter()
        done = 0
        for ep in range(epochs):
            for i in self.rng.permutation(len(X)):
                correct = float(self.step(X[i], int(y[i])))
                ema_t += 1
                ema = 0.99 * ema + 0.01 * correct
                done += 1
                if done % every == 0 or done == total:
                    self.seconds += time.perf_counter() - t0
                    self._record(ep, ema / (1 - 0.99 ** ema_t), X_eval, y_eval)
                    t0 = time.perf_counter()
                if bar is not None:
                    bar.update(1)
        self.seconds += time.perf_counter() - t0
        if bar is not None:
            bar.close()
        return self

    def _record(self, epoch, online, X_eval, y_eval) -> None:
        st = self.write_stats()
        point = {"samples": self.samples_seen, "epoch": epoch + 1, "online_accuracy": online,
                 "writes_max": st["max"], "writes_mean": st["mean"], "writes_total": st["total"],
                 "seconds": self.seconds}
        if X_eval is not None:
            point["test_accuracy"] = self.score(X_eval, y_eval)
        self.history.append(point)

    # --- queries ------------------------------------------------------------------------------
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class predictions for pre-processed inputs."""
        return self.net.predict(X)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on pre-processed inputs."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def write_stats(self, counts: list | None = None) -> dict:
        """Writes per weight cell over all conv/dense layers (biases excluded).

        ``counts`` defaults to the paper's count (``self.writes``); pass ``self.writes_changed``
        for the changed-cells view."""
        counts = self.writes if counts is None else counts
        flat = np.concatenate([c.ravel() for c in counts])
        return {"mean": float(flat.mean()), "max": int(flat.max()), "total": int(flat.sum())}

    def layer_stats(self) -> list[dict]:
        out = []
        for l, c, ch in zip(self.net.weight_layers, self.writes, self.writes_changed):
            out.append({"name": l.name, "shape": list(l.W.shape), "alpha": l.alpha,
                        "writes_mean": float(c.mean()), "writes_max": int(c.max()),
                        "writes_total": int(c.sum()), "writes_changed_mean": float(ch.mean()),
                        "writes_changed_max": int(ch.max())})
        return out


class InferenceTrainer(_Trainer):
    """No learning at all (the deployed model as it is; streaming-BN statistics still stream).

    Parameters
    ----------
    net : Network
        The network.
    seed : int, keyword-only
        Seeds the sample order of :meth:`fit`.
    """

    method = "inference"
    learns = False

    def __init__(self, net: Network, *, seed: int = 0):
        super().__init__(net, lr_bias=0.0, maxnorm=False, seed=seed, train_bias=False)

    def _learn(self) -> None:
        return None


class BiasOnlyTrainer(_Trainer):
    """Only the biases and the streaming-BN gamma/beta learn (every sample); no weight writes.

    Parameters
    ----------
    net : Network
        The network.
    lr_bias : float, keyword-only
        Learning rate of biases and BN parameters (default 1e-2).
    maxnorm : bool, keyword-only
        Max-norm their gradients (default True).
    seed : int, keyword-only
        Seeds the sample order of :meth:`fit`.
    """

    method = "bias-only"

    def __init__(self, net: Network, *, lr_bias: float = 1e-2, maxnorm: bool = True, seed: int = 0):
        super().__init__(net, lr_bias=_check_float("lr_bias", lr_bias, 0.0), maxnorm=bool(maxnorm),
                         seed=seed)

    def _learn(self) -> None:
        for i, layer in enumerate(self.net.weight_layers):
            self._bias_step(i, layer)
        self._norm_step()


class SKSTrainer(_Trainer):
    """Online SKS low-rank training (one quantised weight write per layer per flush).

    Parameters
    ----------
    net : Network
        Quantised network to train in place.
    rank : int, keyword-only
        SKS rank r (default 4).
    batch_fc, batch_conv : int, keyword-only
        Samples accumulated between write attempts for dense (100) and conv (10) layers.
    lr : float, keyword-only
        Base learning rate; the write uses ``eta = lr * mult**0.5`` (default 1e-2).
    lr_bias : float, keyword-only
        Bias (and streaming-BN gamma/beta) learning rate, applied every sample (default 1e-2).
    rho_min : float, keyword-only
        Minimum fraction of cells with a nonzero quantised increment for a write to be applied
        (default 0.01).
    kappa_th : float or None, keyword-only
        SKS condition-number skip threshold (default 100; per-term adds only).
    zerovar : bool, keyword-only
        Biased truncated-SVD variant instead of the unbiased OK step (default False).
    maxnorm : bool, keyword-only
        Max-norm the factors L~, R~ at write time and the bias gradients (default True).
    discount : float, keyword-only
        ``mult`` decay per attempt and ``c_x`` decay after a rejected attempt (default 1.0).
    factor_bits : int or None, keyword-only
        Re-quantisation of the SKS bases (default 16).
    pixel_frac : float, keyword-only
        Fraction of a conv layer's per-pixel terms streamed into SKS, drawn at random and scaled
        by ``1 / pixel_frac`` so the estimate stays unbiased (the authors' ``rho_samp``; default 1).
    conv_mode : {"sample", "pixel"}, keyword-only
        ``"pixel"``: every output pixel's term is one sequential SKS step (the paper's
        Algorithm 1, P rank-(r+1) SVDs per sample). ``"sample"`` (default): a sample's pixel
        terms are added as one block (:meth:`~nms.sw.sks.SKS.add_block`: one SVD of state +
        block, then repeated unbiased OK steps down to rank r), the vectorised common path.
    seed : int, keyword-only
        Seeds the sample order, the SKS random signs and the pixel subsampling.
    """

    method = "sks"

    def __init__(self, net: Network, *, rank: int = 4, batch_fc: int = 100, batch_conv: int = 10,
                 lr: float = 1e-2, lr_bias: float = 1e-2, rho_min: float = 0.01,
                 kappa_th: float | None = 100.0, zerovar: bool = False, maxnorm: bool = True,
                 discount: float = 1.0, factor_bits: int | None = 16, pixel_frac: float = 1.0,
                 conv_mode: str = "sample", seed: int = 0):
        super().__init__(net, lr_bias=_check_float("lr_bias", lr_bias, 0.0), maxnorm=bool(maxnorm),
                         seed=seed)
        self.rank = _check_int("rank", rank, 1)
        self.batch_fc = _check_int("batch_fc", batch_fc, 1)
        self.batch_conv = _check_int("batch_conv", batch_conv, 1)
        self.lr = _check_float("lr", lr, 0.0, lo_open=True)
        self.rho_min = _check_float("rho_min", rho_min, 0.0, 1.0)
        self.discount = _check_float("discount", discount, 0.0, 1.0)
        self.pixel_frac = _check_float("pixel_frac", pixel_frac, 0.0, 1.0, lo_open=True)
        if conv_mode not in ("sample", "pixel"):
            raise ValueError(f"conv_mode must be 'sample' or 'pixel', got {conv_mode!r}")
        self.conv_mode = conv_mode
        self.zerovar = bool(zerovar)
        sign_rngs = self.rng.spawn(len(net.weight_layers))
        self.state = []
        for layer, srng in zip(net.weight_layers, sign_rngs):
            n, m = layer.W.shape
            conv = layer.name.startswith("conv")
            self.state.append({
                "acc": self._make_accumulator(n, m, kappa_th, factor_bits, srng),
                "conv": conv, "B": self.batch_conv if conv else self.batch_fc,
                "since": 0, "mult": 0.0, "mn_L": MaxNorm(), "mn_R": MaxNorm(),
                "attempts": 0, "applied": 0, "skipped_terms": 0, "terms": 0,
            })

    def _make_accumulator(self, n, m, kappa_th, factor_bits, rng):
        return SKS(n, m, rank=self.rank, kappa_th=kappa_th, zerovar=self.zerovar,
                   factor_bits=factor_bits, rng=rng)

    def _accumulate(self, st: dict, dz: np.ndarray, a: np.ndarray) -> None:
        sks = st["acc"]
        if st["conv"] and self.conv_mode == "sample":
            sks.add_block(dz, a)
        else:
            for p in range(len(dz)):
                sks.add(dz[p], a[p])

    def _learn(self) -> None:
        for i, (layer, st) in enumerate(zip(self.net.weight_layers, self.state)):
            self._bias_step(i, layer)
            dz, a = layer.dz_terms, layer.a_terms
            if st["conv"] and self.pixel_frac < 1.0:
                keep = self.rng.random(len(dz)) < self.pixel_frac
                dz, a = dz[keep] / self.pixel_frac, a[keep]
            self._accumulate(st, dz, a)
            st["since"] += 1
            if st["since"] >= st["B"]:
                self._flush(i, layer, st)
        self._norm_step()

    def _update(self, st: dict) -> np.ndarray:
        """The (unscaled) weight update of this flush: the max-normed SKS estimate."""
        L, R = st["acc"].grab()
        if self.maxnorm:
            L, R = st["mn_L"](L), st["mn_R"](R)
        return L @ R.T

    def _reset(self, st: dict) -> None:
        acc = st["acc"]
        st["terms"] += acc.n_added
        st["skipped_terms"] += acc.n_skipped
        acc.reset()

    def _flush(self, i: int, layer, st: dict) -> None:
        st["attempts"] += 1
        st["mult"] = st["mult"] * self.discount + st["since"]
        st["since"] = 0
        eta = self.lr * st["mult"] ** 0.5
        new, written, changed = self._write(layer, eta * self._update(st))
        if written.mean() > self.rho_min:
            layer.W = new
            self.writes[i] += written
            self.writes_changed[i] += changed
            st["applied"] += 1
            self._reset(st)
            st["mult"] = 0.0
        elif self.discount != 1.0:
            st["acc"].cx = st["acc"].cx * self.discount

    def layer_stats(self) -> list[dict]:
        out = super().layer_stats()
        for d, st in zip(out, self.state):
            acc = st["acc"]
            d.update({"batch": st["B"], "write_attempts": st["attempts"],
                      "writes_applied": st["applied"],
                      "sks_terms": st["terms"] + acc.n_added,
                      "sks_skipped_terms": st["skipped_terms"] + acc.n_skipped,
                      "sks_state_values": acc.memory_values})
        return out


class _ExactAccumulator:
    """Full-rank n x m gradient accumulator (the batched baseline's state; n*m numbers)."""

    def __init__(self, n: int, m: int):
        self.G = np.zeros((n, m))
        self.n_added = self.n_skipped = 0
        self.cx = np.zeros(1)  # the discount hook of SKSTrainer scales G instead (see _flush)

    def add_block(self, dZ, A):
        self.G += dZ.T @ A
        self.n_added += len(dZ)

    def reset(self):
        self.G[:] = 0.0
        self.n_added = 0

    @property
    def memory_values(self) -> int:
        return self.G.size


class BatchedTrainer(SKSTrainer):
    """Full-rank batched baseline: the EXACT gradient summed over B samples, one write per flush.

    Same flush rule as :class:`SKSTrainer` (``mult``, ``eta = lr * mult**0.5``, ``rho_min``,
    max-norm of the update at write time), but the state is the full ``n x m`` accumulator
    instead of the rank-r estimate, so the comparison separates what batching alone buys
    (fewer writes) from what the low-rank estimate costs (its variance) and saves (memory).
    Parameters as :class:`SKSTrainer` (``rank``, ``kappa_th``, ``zerovar``, ``factor_bits`` and
    ``conv_mode`` do not apply).
    """

    method = "batched"

    def __init__(self, net: Network, *, batch_fc: int = 100, batch_conv: int = 10,
                 lr: float = 1e-2, lr_bias: float = 1e-2, rho_min: float = 0.01,
                 maxnorm: bool = True, discount: float = 1.0, seed: int = 0):
        super().__init__(net, rank=1, batch_fc=batch_fc, batch_conv=batch_conv, lr=lr,
                         lr_bias=lr_bias, rho_min=rho_min, maxnorm=maxnorm, discount=discount,
                         seed=seed)

    def _make_accumulator(self, n, m, kappa_th, factor_bits, rng):
        return _ExactAccumulator(n, m)

    def _accumulate(self, st: dict, dz: np.ndarray, a: np.ndarray) -> None:
        st["acc"].add_block(dz, a)

    def _update(self, st: dict) -> np.ndarray:
        G = st["acc"].G
        return st["mn_L"](G) if self.maxnorm else G

    def _flush(self, i: int, layer, st: dict) -> None:
        applied = st["applied"]
        super()._flush(i, layer, st)
        if st["applied"] == applied and self.discount != 1.0:
            st["acc"].G *= self.discount


class SGDTrainer(_Trainer):
    """Baseline per-sample SGD on the same quantised weights, with write counting.

    Parameters
    ----------
    net : Network
        Quantised network to train in place.
    lr : float, keyword-only
        Learning rate of the per-sample update ``dW = Q(lr * grad_W)`` (default 1e-2).
    lr_bias : float, keyword-only
        Bias (and streaming-BN gamma/beta) learning rate (default 1e-2).
    maxnorm : bool, keyword-only
        Max-norm ``a`` and ``dz`` separately every sample (the paper's SGD/Max-Norm; default False).
    conv_count : {"pixel", "nonzero"}, keyword-only
        The paper's count for conv layers: per output pixel (authors' count_version 2, default:
        a cell is written at every pixel where its input and output error are both nonzero,
        counted before quantisation) or cells with a nonzero quantised increment.
        ``writes_changed`` (cells whose value changed) is kept either way.
    seed : int, keyword-only
        Seeds the sample order.
    """

    method = "sgd"

    def __init__(self, net: Network, *, lr: float = 1e-2, lr_bias: float = 1e-2,
                 maxnorm: bool = False, conv_count: str = "pixel", seed: int = 0):
        super().__init__(net, lr_bias=_check_float("lr_bias", lr_bias, 0.0), maxnorm=bool(maxnorm),
                         seed=seed)
        self.lr = _check_float("lr", lr, 0.0, lo_open=True)
        if conv_count not in ("pixel", "nonzero"):
            raise ValueError(f"conv_count must be 'pixel' or 'nonzero', got {conv_count!r}")
        self.conv_count = conv_count
        self._mn_a = [MaxNorm() for _ in net.weight_layers]
        self._mn_dz = [MaxNorm() for _ in net.weight_layers]

    @property
    def writes_nonzero(self) -> list:
        """Changed-cell counts (the name used by earlier reports)."""
        return self.writes_changed

    def _learn(self) -> None:
        for i, layer in enumerate(self.net.weight_layers):
            self._bias_step(i, layer)
            dz, a = layer.dz_terms, layer.a_terms
            if self.maxnorm:
                dz, a = self._mn_dz[i](dz), self._mn_a[i](a)
            new, written, changed = self._write(layer, self.lr * (dz.T @ a))
            layer.W = new
            self.writes_changed[i] += changed
            if layer.name.startswith("conv") and self.conv_count == "pixel":
                # One write per pixel whose outer product touches the cell (counted before
                # quantisation, as hardware writing every pixel's update would).
                # (a float matmul: BLAS, and exact for counts < 2^53; an int64 one is not BLAS)
                self.writes[i] += ((dz != 0).T.astype(np.float64)
                                   @ (a != 0).astype(np.float64)).astype(np.int64)
            else:
                self.writes[i] += written
        self._norm_step()


# --- driver-facing API ------------------------------------------------------------------------
_MODEL_OPTS = ("hidden", "channels", "kernel1", "stride1")
_QUANT_OPTS = ("weight_bits", "bias_bits", "act_bits", "grad_bits", "input_bits")
_SKS_OPTS = ("batch_fc", "batch_conv", "lr", "lr_bias", "rho_min", "kappa_th", "zerovar",
             "maxnorm", "discount", "factor_bits", "pixel_frac", "conv_mode")
_SGD_OPTS = ("lr", "lr_bias", "maxnorm", "conv_count")
_RUN_OPTS = ("eval_every", "scale", "quantized", "val")


def _run(method, Xtr, ytr, Xte, yte, *, model, image_shape, epochs, seed, progress, rank, opts):
    if model not in _MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {_MODELS}")
    epochs = _check_int("epochs", epochs, 1)
    seed = _check_int("seed", seed, 0)
    allowed = _MODEL_OPTS + _QUANT_OPTS + _RUN_OPTS + (_SKS_OPTS if method == "sks" else _SGD_OPTS)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise TypeError(f"train_{method}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    ytr, yte = np.asarray(ytr), np.asarray(yte)
    for name, yy, XX in (("ytr", ytr, Xtr), ("yte", yte, Xte)):
        if yy.ndim != 1 or not np.issubdtype(yy.dtype, np.integer):
            raise TypeError(f"{name} must be a 1-D integer label array, got {yy.dtype} {yy.shape}")
        if len(yy) != len(XX):
            raise ValueError(f"{name} has {len(yy)} labels for {len(XX)} samples")
        if len(yy) and yy.min() < 0:
            raise ValueError(f"{name} labels must be >= 0, got {yy.min()}")
    val = opts.pop("val", None)
    if val is not None:
        if not (isinstance(val, (tuple, list)) and len(val) == 2) or len(val[0]) != len(val[1]):
            raise ValueError("val must be a pair (X_val, y_val) of equal length")
    scale = opts.pop("scale", None)
    if scale is None:
        scale = max(float(np.max(Xtr)), 1.0)  # the data's max value: 16 for digits, 255 Fashion
    Xtr_p = prepare_inputs(Xtr, model=model, image_shape=image_shape, scale=scale)
    Xte_p = prepare_inputs(Xte, model=model, image_shape=image_shape, scale=scale)
    quantized = bool(opts.pop("quantized", True))
    qkw = {k: opts.pop(k) for k in _QUANT_OPTS if k in opts}
    quant = QuantConfig(**qkw) if quantized else QuantConfig.float()
    qin = quant.quantizers()["in"]
    Xtr_p, Xte_p = qin(Xtr_p), qin(Xte_p)
    n_classes = int(max(ytr.max(), yte.max() if len(yte) else 0)) + 1
    mkw = {k: opts.pop(k) for k in _MODEL_OPTS if k in opts}
    init_rng = np.random.default_rng([seed, 1])
    net = build_model(model, input_shape=Xtr_p.shape[2:] if model != "mlp" else Xtr_p.shape[1:],
                      n_classes=n_classes, quant=quant, rng=init_rng, **mkw)
    eval_every = opts.pop("eval_every", None)
    if method == "sks":
        tr = SKSTrainer(net, rank=rank, seed=seed, **opts)
    else:
        tr = SGDTrainer(net, seed=seed, **opts)
    # History points score a fixed subset of the test set (keeps long runs cheap).
    sub = np.random.default_rng([seed, 2]).permutation(len(Xte_p))[:1000]
    tr.fit(Xtr_p, ytr, epochs=epochs, X_eval=Xte_p[sub], y_eval=yte[sub], eval_every=eval_every,
           progress=progress)
    result = {
        "method": method, "model": model, "image_shape": list(net.input_shape[1:]) or None,
        "n_train": int(len(ytr)), "n_test": int(len(yte)), "epochs": epochs, "seed": seed,
        "rank": rank if method == "sks" else None, "quantized": quantized,
        "test_accuracy": tr.score(Xte_p, yte), "train_accuracy": tr.score(Xtr_p, ytr),
        "writes": tr.write_stats(), "writes_changed": tr.write_stats(tr.writes_changed),
        "layers": tr.layer_stats(), "n_weights": net.n_weights,
        "history": tr.history, "seconds": tr.seconds,
        "options": {**opts, **qkw, **mkw, "scale": scale},
    }
    if val is not None:
        # a held-out validation split scored the same way: what hyperparameter choices use
        Xv = qin(prepare_inputs(val[0], model=model, image_shape=image_shape, scale=scale))
        result["val_accuracy"] = tr.score(Xv, np.asarray(val[1]))
        result["n_val"] = int(len(val[1]))
    if method == "sgd":
        result["writes_nonzero"] = tr.write_stats(tr.writes_changed)
        result["conv_count"] = tr.conv_count
    return result


def train_sks(Xtr, ytr, Xte, yte, *, model: str = "mlp", image_shape=None, rank: int = 4,
              epochs: int = 5, seed: int = 0, progress: bool = False, **opts) -> dict:
    """Train a quantised network with SKS low-rank updates and report accuracy and writes.

    Parameters
    ----------
    Xtr, Xte : ndarray
        Raw training / test inputs, ``(N, H, W)`` images or ``(N, D)``; normalised to [0, 1] by the
        training data's maximum (override with ``scale=``).
    ytr, yte : ndarray of int
        Labels.
    model : {"mlp", "cnn"}, keyword-only
        Network (see :func:`nms.sw.nn.build_model`).
    image_shape : tuple or None, keyword-only
        ``(H, W)`` for flattened CNN inputs.
    rank : int, keyword-only
        SKS rank (default 4).
    epochs : int, keyword-only
        Passes over the training stream (default 5).
    seed : int, keyword-only
        Seeds initialisation, order and random signs.
    progress : bool, keyword-only
        Show a progress bar.
    **opts
        :class:`SKSTrainer` options (``batch_fc``, ``batch_conv``, ``lr``, ``lr_bias``,
        ``rho_min``, ``kappa_th``, ``zerovar``, ``maxnorm``, ``discount``, ``factor_bits``,
        ``pixel_frac``), model options (``hidden``, ``channels``, ``kernel1``, ``stride1``),
        number formats (``weight_bits``, ...; ``quantized=False`` for float), ``eval_every``,
        ``scale``, ``val=(X_val, y_val)`` (a held-out split; adds ``val_accuracy``).

    Returns
    -------
    dict
        ``test_accuracy``, ``train_accuracy``, ``writes`` {mean, max, total} per weight cell,
        ``layers`` (per-layer write and SKS statistics), ``history`` (samples, online/test
        accuracy, writes over training), ``seconds`` (training wall time), the configuration.
    """
    _check_int("rank", rank, 1)
    return _run("sks", Xtr, ytr, Xte, yte, model=model, image_shape=image_shape, epochs=epochs,
                seed=seed, progress=progress, rank=rank, opts=dict(opts))


def train_sgd(Xtr, ytr, Xte, yte, *, model: str = "mlp", image_shape=None, epochs: int = 5,
              seed: int = 0, progress: bool = False, **opts) -> dict:
    """Per-sample SGD baseline on the same quantised weights; same result shape as :func:`train_sks`.

    ``**opts``: :class:`SGDTrainer` options (``lr``, ``lr_bias``, ``maxnorm``, ``conv_count``) and
    the model / format / run options of :func:`train_sks`. The result adds ``writes_nonzero``
    (cells whose stored value changed) beside ``writes`` (the configured counting rule).
    """
    return _run("sgd", Xtr, ytr, Xte, yte, model=model, image_shape=image_shape, epochs=epochs,
                seed=seed, progress=progress, rank=None, opts=dict(opts))
