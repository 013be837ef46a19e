"""Quantised NumPy networks with NVM-style weights (the model side of low-rank training).

Number formats follow the quantisation model of Gural et al. (App. C; ``shared`` research notes
``lrt.md`` section 5): uniform power-of-two steps, round to nearest, clip; straight-through
gradients (zeroed where a forward value was clipped).

============================  ======  ===========  ==========
quantity                      bits    range        step
============================  ======  ===========  ==========
weights W (stored NVM value)  8 s     [-1, 1)      2^-7
biases, pre-activations       16 s    [-8, 8)      2^-12
activations after ReLU        8 u     [0, 2)       2^-7
back-propagated gradients     8 s     [-1, 1)      2^-7
network input                 8 u     [0, 1)       2^-8
============================  ======  ===========  ==========

A layer computes ``z = Qb(Qb(alpha * W a) + b)`` with a fixed power-of-two scale
``alpha = 2**floor(log2(sqrt(3 g / fan_in)))`` (g = 2 before a ReLU, 1 for the last layer), so the
weights can use the whole [-1, 1) grid (initialised U(-1, 1)). Each weight layer exposes, after a
backward pass, the Kronecker-sum terms of its weight gradient: ``grad_W = sum_p dz_p a_p^T`` with
one term per sample for a dense layer and one per output pixel for a conv layer (im2col), the
form both the SKS estimator and the write counters consume.

:class:`StreamingBatchNorm` is the paper's streaming batch norm (App. E): per-channel statistics
are exponential moving averages over the samples seen (``eta = 1 - 1/B_bn``), so it works at
batch size 1 and keeps adapting to the input distribution on the device. ``build_model("lrt-cnn")``
is the paper's small CNN shape (4 valid 3x3 convs, 2 max-pools each followed by ReLU and streaming
BN, then 2 dense layers), with the channel count and hidden width as parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Quantizer", "QuantConfig", "Dense", "Conv2d", "ReLU", "MaxPool2", "Flatten",
           "StreamingBatchNorm", "Network", "build_model", "softmax_xent_grad"]


class Quantizer:
    """Uniform quantiser with a power-of-two step: ``step = 2**(ceil(log2 clip) + signed - bits)``.

    Parameters
    ----------
    bits : int or None
        Word length including the sign bit; ``None`` makes the quantiser the identity (float).
    clip : float
        Magnitude of the range; values are clipped to ``[-clip, clip - step]`` (signed) or
        ``[0, clip - step]`` (unsigned), the two's-complement / unsigned ranges of the word.
    signed : bool
        Signed or unsigned format.
    """

    def __init__(self, bits: int | None, *, clip: float, signed: bool):
        if bits is not None and (isinstance(bits, bool) or not isinstance(bits, (int, np.integer))
                                 or not 1 <= bits <= 32):
            raise ValueError(f"quantiser bits must be an integer in [1, 32] or None, got {bits!r}")
        if not clip > 0:
            raise ValueError(f"quantiser clip must be > 0, got {clip!r}")
        self.bits, self.clip, self.signed = bits, float(clip), bool(signed)
        if bits is None:
            self.step, self.lo, self.hi = 0.0, -math.inf, math.inf
        else:
            self.step = 2.0 ** (math.ceil(math.log2(clip)) + int(signed) - bits)
            self.hi = self.clip - self.step
            self.lo = -self.clip if signed else 0.0
            self._inv = 1.0 / self.step

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.bits is None:
            return x
        # In-place ufuncs on one temporary (this runs ~50 times per online sample); x / step is
        # exact as x * (1 / step) because the step is a power of two.
        y = np.multiply(x, self._inv)
        y += 0.5
        np.floor(y, out=y)
        y *= self.step
        # two ufuncs rather than np.clip, whose Python wrapper costs more than a pass here
        np.maximum(y, self.lo, out=y)
        np.minimum(y, self.hi, out=y)
        return y

    def round(self, x: np.ndarray) -> np.ndarray:
        """Round to the grid WITHOUT clipping (for weight increments)."""
        return x if self.bits is None else np.floor(x / self.step + 0.5) * self.step

    def inside(self, x: np.ndarray) -> np.ndarray:
        """Straight-through mask: True where ``x`` was not clipped."""
        if self.bits is None:
            return np.ones(np.shape(x), dtype=bool)
        return (x >= self.lo) & (x <= self.hi)


@dataclass(frozen=True)
class QuantConfig:
    """Word lengths of the number formats (``None`` = float64, no quantisation).

    Parameters
    ----------
    weight_bits : int or None
        NVM weight cells on a grid in [-1, 1) with LSB ``2**-(weight_bits-1)`` (default 8).
    bias_bits : int or None
        Biases and pre-activation accumulators in [-8, 8) (default 16).
    act_bits : int or None
        Activations after ReLU in [0, 2) (default 8).
    grad_bits : int or None
        Back-propagated gradients in [-1, 1) (default 8).
    input_bits : int or None
        Network input in [0, 1) (default 8).
    """

    weight_bits: int | None = 8
    bias_bits: int | None = 16
    act_bits: int | None = 8
    grad_bits: int | None = 8
    input_bits: int | None = 8

    @classmethod
    def float(cls) -> "QuantConfig":
        """Full-precision reference configuration."""
        return cls(None, None, None, None, None)

    def quantizers(self) -> dict:
        return {
            "w": Quantizer(self.weight_bits, clip=1.0, signed=True),
            "b": Quantizer(self.bias_bits, clip=8.0, signed=True),
            "a": Quantizer(self.act_bits, clip=2.0, signed=False),
            "g": Quantizer(self.grad_bits, clip=1.0, signed=True),
            "in": Quantizer(self.input_bits, clip=1.0, signed=False),
            # streaming batch norm: mean-square statistic (16 bit, +-64) and output (8 bit, +-2)
            "bn_sq": Quantizer(self.bias_bits, clip=64.0, signed=True),
            "bn_out": Quantizer(self.act_bits, clip=2.0, signed=True),
        }


def _alpha(fan_in: int, gain: float) -> float:
    return 2.0 ** math.floor(math.log2(math.sqrt(3.0 * gain / fan_in)))


class _WeightLayer:
    """Shared parts of :class:`Dense` and :class:`Conv2d`: W (n_out x n_in) on the weight grid."""

    name: str

    def _init_params(self, n_out: int, n_in: int, *, gain: float, q: dict,
                     rng: np.random.Generator) -> None:
        self.q = q
        self.alpha = _alpha(n_in, gain)
        self.W = q["w"](rng.uniform(-1.0, 1.0, size=(n_out, n_in)))
        self.b = np.zeros(n_out)
        self.dz_terms = self.a_terms = self.grad_b = None
        self.input_grad = True  # the Network clears it for its first layer

    # W is a property so that every assignment (a write, a drift step, pre-training) drops the
    # cached read value; code that mutates W in place must assign it back (``layer.W = W``).
    @property
    def W(self) -> np.ndarray:
        """Stored NVM weights (n_out x n_in); off the grid only after analog drift."""
        return self._W

    @W.setter
    def W(self, value: np.ndarray) -> None:
        self._W = value
        self._Wr = self._Wm = None

    def read_mask(self) -> "np.ndarray | bool":
        """Straight-through clip mask of the weight read: True where ``W`` rounds into the grid.

        The authors' quantiser masks by its rounded code ``round(W / LSB)`` lying in the word's
        range; with round-half-up that is ``lo - LSB/2 <= W < hi + LSB/2``. All True unless
        analog drift moved a cell off the grid towards the range ends; then the plain ``True``
        is returned instead of an all-True array (cached like :meth:`read_W`).
        """
        if self._Wm is None:
            qw = self.q["w"]
            if qw.bits is None:
                self._Wm = True
            else:
                half = 0.5 * qw.step
                m = (self._W >= qw.lo - half) & (self._W < qw.hi + half)
                self._Wm = True if m.all() else m
        return self._Wm

    def read_W(self) -> np.ndarray:
        """The read value ``Qw(W)`` (cached until ``W`` is assigned again).

        Quantising the whole matrix twice per sample (forward and backward) was a large part of
        the per-sample cost; the stored value only changes on a write or a drift step.
        """
        if self._Wr is None:
            self._Wr = self.q["w"](self._W)
        return self._Wr

    @property
    def shape(self) -> tuple[int, int]:
        return self.W.shape

    def _affine(self, cols: np.ndarray) -> np.ndarray:
        qb = self.q["b"]
        # The read value Qw(W): the stored value itself unless analog drift moved it off the grid.
        return qb(qb(self.alpha * (cols @ self.read_W().T)) + qb(self.b))

    def grad_W(self) -> np.ndarray:
        """Exact weight gradient of the last backward pass, ``sum_p dz_p a_p^T``."""
        return self.dz_terms.T @ self.a_terms


class Dense(_WeightLayer):
    """Fully connected layer ``z = alpha W a + b`` on NVM-style quantised weights.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths.
    gain : float, keyword-only
        2 before a ReLU, 1 for the output layer (sets the fixed power-of-two scale alpha).
    q : dict, keyword-only
        Quantisers from :meth:`QuantConfig.quantizers`.
    rng : numpy.random.Generator, keyword-only
        Initialisation source.
    """

    def __init__(self, n_in: int, n_out: int, *, gain: float, q: dict, rng: np.random.Generator,
                 name: str = "fc"):
        self.name = name
        self._init_params(n_out, n_in, gain=gain, q=q, rng=rng)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if train:
            self._a = x
        return self._affine(x)

    def backward(self, dz: np.ndarray) -> np.ndarray:
        # d(loss)/dW = alpha dz a^T: the alpha-scaled error is the output-side Kronecker factor.
        self.dz_terms = self.alpha * dz
        self.a_terms = self._a
        self.grad_b = dz.sum(axis=0)
        return self.alpha * (dz @ self.read_W()) if self.input_grad else None


class Conv2d(_WeightLayer):
    """Valid 2-D convolution by im2col; each output pixel contributes one gradient term.

    Parameters
    ----------
    c_in, c_out : int
        Channels.
    k : int
        Square kernel size.
    stride : int, keyword-only
        Stride (default 1).
    gain, q, rng : see :class:`Dense`.
    """

    def __init__(self, c_in: int, c_out: int, k: int, *, stride: int = 1, gain: float, q: dict,
                 rng: np.random.Generator, name: str = "conv"):
        self.name, self.c_in, self.c_out, self.k, self.stride = name, c_in, c_out, k, stride
        self._init_params(c_out, c_in * k * k, gain=gain, q=q, rng=rng)

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        return (h - self.k) // self.stride + 1, (w - self.k) // self.stride + 1

    def _index(self, c: int, h: int, w: int) -> np.ndarray:
        """im2col gather index (Ho*Wo, C*k*k) into one flattened (C, H, W) sample (cached).

        One fancy-index gather builds the column matrix (forward) and one ``bincount`` with the
        same index scatters the column gradients back (col2im), instead of a strided window view
        plus a transposing copy and a k*k loop of slice additions.
        """
        key = (c, h, w)
        if getattr(self, "_idx_key", None) != key:
            ho, wo = self.out_hw(h, w)
            s, k = self.stride, self.k
            ci, ki, kj = np.meshgrid(np.arange(c), np.arange(k), np.arange(k), indexing="ij")
            oi, oj = np.meshgrid(np.arange(ho) * s, np.arange(wo) * s, indexing="ij")
            # column order (c, kh, kw) = W's column order; row order (ho, wo)
            idx = (ci.ravel()[None, :] * (h * w) + (oi.ravel()[:, None] + ki.ravel()[None, :]) * w
                   + oj.ravel()[:, None] + kj.ravel()[None, :])
            self._idx, self._idx_key = idx.astype(np.intp), key
        return self._idx

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        n, c, h, w = x.shape
        ho, wo = self.out_hw(h, w)
        idx = self._index(c, h, w)
        cols = x.reshape(n, c * h * w)[:, idx]  # (N, Ho*Wo, C*k*k)
        if train:
            self._cols, self._xshape = cols, x.shape
        z = self._affine(cols)
        return z.transpose(0, 2, 1).reshape(n, self.c_out, ho, wo)

    def backward(self, dz: np.ndarray) -> np.ndarray:
        n, c, h, w = self._xshape
        ho, wo = dz.shape[2], dz.shape[3]
        dzc = dz.reshape(n, self.c_out, ho * wo).transpose(0, 2, 1)  # (N, P, c_out)
        self.dz_terms = self.alpha * dzc.reshape(-1, self.c_out)
        self.a_terms = self._cols.reshape(-1, self._cols.shape[-1])
        self.grad_b = dzc.sum(axis=(0, 1))
        if not self.input_grad:
            return None  # first layer: nobody needs the gradient w.r.t. the network input
        dcols = self.alpha * (dzc @ self.read_W())  # (N, P, C*k*k)
        size = c * h * w
        idx = self._index(c, h, w)
        if n > 1:
            idx = idx[None] + (np.arange(n) * size)[:, None, None]
        # col2im: every column entry adds into its input pixel. The terms are products of
        # values on power-of-two grids, so the sums are exact in any order.
        dx = np.bincount(idx.ravel(), weights=dcols.ravel(), minlength=n * size)
        return dx.reshape(self._xshape)


class ReLU:
    """ReLU with quantised output (``Qa``) and quantised, straight-through gradient (``Qg``)."""

    name = "relu"

    def __init__(self, *, q: dict):
        self.q = q

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if train:
            self._x = x
        return self.q["a"](np.maximum(x, 0.0))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        pass_ = (self._x > 0) & self.q["a"].inside(self._x)
        return self.q["g"](dy * pass_)


class MaxPool2:
    """2 x 2 max pooling (odd trailing rows/columns dropped); gradient to the first maximum."""

    name = "pool"

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        n, c, h, w = x.shape
        h2, w2 = h // 2, w // 2
        blocks = x[:, :, :2 * h2, :2 * w2].reshape(n, c, h2, 2, w2, 2).transpose(0, 1, 2, 4, 3, 5)
        blocks = blocks.reshape(n, c, h2, w2, 4)
        if train:
            self._arg, self._xshape = blocks.argmax(axis=-1), x.shape
        return blocks.max(axis=-1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        n, c, h, w = self._xshape
        h2, w2 = dy.shape[2], dy.shape[3]
        blocks = np.zeros((n * c * h2 * w2, 4))
        blocks[np.arange(blocks.shape[0]), self._arg.ravel()] = dy.ravel()
        dx = np.zeros(self._xshape)
        dx[:, :, :2 * h2, :2 * w2] = (blocks.reshape(n, c, h2, w2, 2, 2)
                                      .transpose(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h2, 2 * w2))
        return dx


class StreamingBatchNorm:
    """Streaming batch norm over channels (App. E of Gural et al.), usable at batch size 1.

    Per channel, over all pixels of the incoming batch (one sample online)::

        mu_s <- eta mu_s + (1 - eta) mean(x)        sq_s <- eta sq_s + (1 - eta) mean(x^2)
        mu = mu_s / (1 - eta^t)    var = clip(sq_s / (1 - eta^t) - mu^2, 1e-8, 1e8)
        y  = Qn(gamma (x - mu) / sqrt(var + 1e-8) + beta)

    with ``eta = 1 - 1 / b_bn`` (the authors' ``b_bn = 10``: eta = 0.9). The statistics are
    16-bit quantised (mean in [-8, 8), mean square in [-64, 64)), the output 8-bit signed in
    [-2, 2) (LSB 2^-6). The statistics update only in train mode (every online sample); eval
    mode (``train=False``) normalises with the current statistics without updating them. As in
    the authors' code, the backward pass treats mu and sigma as constants: ``dx = dy gamma /
    sigma``; ``gamma`` and ``beta`` are trainable parameters (``grad_gamma``, ``grad_beta``).

    Parameters
    ----------
    channels : int
        Number of channels (axis 1 of the input).
    q : dict, keyword-only
        Quantisers from :meth:`QuantConfig.quantizers` (uses ``"b"``, ``"bn_sq"``, ``"bn_out"``).
    b_bn : float, keyword-only
        Effective batch of the moving statistics (default 10).
    """

    def __init__(self, channels: int, *, q: dict, b_bn: float = 10.0, name: str = "bn"):
        if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
            raise ValueError(f"StreamingBatchNorm channels must be an integer >= 1, got {channels!r}")
        if not b_bn > 1:
            raise ValueError(f"StreamingBatchNorm b_bn must be > 1, got {b_bn!r}")
        self.name, self.q, self.channels = name, q, int(channels)
        self.eta = 1.0 - 1.0 / float(b_bn)
        self.gamma = np.ones(self.channels)
        self.beta = np.zeros(self.channels)
        self.mu_s = np.zeros(self.channels)
        self.sq_s = np.zeros(self.channels)
        self.t = 0
        self.grad_gamma = self.grad_beta = None

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Bias-corrected mean and variance (mean 0, variance 1 before any sample)."""
        if self.t == 0:
            return np.zeros(self.channels), np.ones(self.channels)
        corr = 1.0 - self.eta ** self.t
        mu = self.mu_s / corr
        var = np.clip(self.sq_s / corr - mu * mu, 1e-8, 1e8)
        return mu, var

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Normalise ``x`` (N, C, H, W) or (N, C).

        In train mode the samples of a batch are streamed in order: sample i updates the
        statistics and is normalised with them, exactly as N online steps would (so an
        offline pre-training with batches sees the same normalisation as the device).
        """
        shape = (-1, self.channels, 1, 1) if x.ndim == 4 else (-1, self.channels)
        if train:
            qb, qs = self.q["b"], self.q["bn_sq"]
            red = (2, 3) if x.ndim == 4 else ()
            m1 = x.mean(axis=red) if red else x
            m2 = (x * x).mean(axis=red) if red else x * x
            mus = np.empty((len(x), self.channels))
            vars_ = np.empty((len(x), self.channels))
            for i in range(len(x)):
                self.mu_s = qb(self.eta * self.mu_s + (1 - self.eta) * m1[i])
                self.sq_s = qs(self.eta * self.sq_s + (1 - self.eta) * m2[i])
                self.t += 1
                mus[i], vars_[i] = self.stats()
            mu, var = mus.reshape(shape), vars_.reshape(shape)
        else:
            mu, var = (v.reshape(shape) for v in self.stats())
        inv = 1.0 / np.sqrt(var + 1e-8)
        xhat = (x - mu) * inv
        pre = self.gamma.reshape(1, *shape[1:]) * xhat + self.beta.reshape(1, *shape[1:])
        if train:
            self._xhat, self._inv, self._pre = xhat, inv, pre
            self._axes = (0, 2, 3) if x.ndim == 4 else (0,)
        return self.q["bn_out"](pre)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = dy * self.q["bn_out"].inside(self._pre)  # straight-through, zero where clipped
        self.grad_gamma = (dy * self._xhat).sum(axis=self._axes)
        self.grad_beta = dy.sum(axis=self._axes)
        g = self.gamma.reshape((1, -1, 1, 1) if dy.ndim == 4 else (1, -1))
        return dy * g * self._inv


class Flatten:
    """(N, C, H, W) -> (N, C*H*W)."""

    name = "flatten"

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if train:
            self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self._shape)


def softmax_xent_grad(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of the softmax cross-entropy w.r.t. the logits, ``softmax(z) - onehot(y)``."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p


class Network:
    """A sequential quantised network.

    Parameters
    ----------
    layers : list
        Layer objects with ``forward(x, train)`` / ``backward(dy)``.
    input_shape : tuple of int
        Per-sample input shape the first layer expects ((D,) or (1, H, W)).
    q : dict
        Quantisers (the input and gradient ones are used here).
    """

    def __init__(self, layers: list, *, input_shape: tuple, q: dict):
        self.layers, self.input_shape, self.q = layers, tuple(input_shape), q
        self.weight_layers = [l for l in layers if isinstance(l, _WeightLayer)]
        self.norm_layers = [l for l in layers if isinstance(l, StreamingBatchNorm)]
        if layers and isinstance(layers[0], _WeightLayer):
            layers[0].input_grad = False

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, logits: np.ndarray, y: np.ndarray) -> None:
        """Back-propagate the (quantised) loss gradient; fills each weight layer's terms."""
        d = self.q["g"](softmax_xent_grad(logits, y))
        for layer in reversed(self.layers):
            d = layer.backward(d)
            if d is None:
                break

    def predict(self, X: np.ndarray, *, batch: int = 512) -> np.ndarray:
        """Class predictions for pre-processed inputs ``X`` (N, *input_shape)."""
        out = [self.forward(X[i:i + batch]).argmax(axis=1) for i in range(0, len(X), batch)]
        return np.concatenate(out) if out else np.zeros(0, dtype=int)

    @property
    def n_weights(self) -> int:
        return sum(l.W.size for l in self.weight_layers)


def build_model(model: str, *, input_shape: tuple, n_classes: int, quant: QuantConfig,
                rng: np.random.Generator, hidden: tuple = (64,), channels: tuple = (16, 32),
                kernel1: int | None = None, stride1: int | None = None, b_bn: float = 10.0) -> Network:
    """Build the MLP or the small CNN used by the trainers.

    Parameters
    ----------
    model : {"mlp", "cnn", "lrt-cnn"}
        ``mlp``: flattened input -> hidden dense layers (ReLU) -> classes.
        ``lrt-cnn``: the paper's CNN shape (section 6.1 of the research notes): conv1 -> ReLU ->
        conv2 -> pool -> ReLU -> streaming BN -> conv3 -> ReLU -> conv4 -> pool -> ReLU ->
        streaming BN -> dense (``hidden``, ReLU) -> classes, all 3x3 valid convs (28x28 -> 4x4);
        images smaller than 16 px use the first block only (8x8 digits -> 2x2). ``channels``
        gives one count for every conv or one per conv (the paper: 128; fc1 512).
        ``cnn``: conv1 (k1, stride s1) -> ReLU -> conv2 3x3 -> ReLU -> 2x2 max-pool -> dense.
        For small images (<= 16 px) k1 = 3, s1 = 1 (8x8 digits: 6x6 then 4x4 pixels); larger
        images use a non-overlapping patch stem k1 = s1 = H // 7 (28x28: 4x4 patches -> 7x7,
        then 5x5), which keeps the per-pixel SKS streaming affordable on a CPU.
    input_shape : tuple of int
        ``(D,)`` for the MLP; ``(H, W)`` for the CNN.
    n_classes : int
        Output width.
    quant : QuantConfig
        Number formats.
    rng : numpy.random.Generator
        Weight initialisation.
    hidden : tuple of int, keyword-only
        MLP hidden widths (default (64,)).
    channels : tuple of two int, keyword-only
        CNN channels of conv1 and conv2 (default (16, 32)).
    kernel1, stride1 : int or None, keyword-only
        Override conv1's kernel and stride.
    b_bn : float, keyword-only
        Effective batch of the streaming batch norm statistics (lrt-cnn; default 10).
    """
    q = quant.quantizers()
    if model == "mlp":
        d = int(np.prod(input_shape))
        layers, width = [], d
        for i, h in enumerate(hidden):
            layers += [Dense(width, int(h), gain=2.0, q=q, rng=rng, name=f"fc{i + 1}"), ReLU(q=q)]
            width = int(h)
        layers.append(Dense(width, n_classes, gain=1.0, q=q, rng=rng, name=f"fc{len(hidden) + 1}"))
        return Network(layers, input_shape=(d,), q=q)
    if model == "cnn":
        if len(input_shape) != 2:
            raise ValueError(f"the cnn model needs image_shape (H, W), got {input_shape!r}")
        h, w = (int(v) for v in input_shape)
        if len(channels) != 2 or min(channels) < 1:
            raise ValueError(f"channels must be two positive integers, got {channels!r}")
        k1 = kernel1 if kernel1 is not None else (3 if h <= 16 else max(1, h // 7))
        s1 = stride1 if stride1 is not None else (1 if h <= 16 else k1)
        c1, c2 = (int(c) for c in channels)
        conv1 = Conv2d(1, c1, k1, stride=s1, gain=2.0, q=q, rng=rng, name="conv1")
        h1, w1 = conv1.out_hw(h, w)
        conv2 = Conv2d(c1, c2, 3, gain=2.0, q=q, rng=rng, name="conv2")
        h2, w2 = conv2.out_hw(h1, w1)
        if h2 < 2 or w2 < 2:
            raise ValueError(f"image_shape {input_shape!r} is too small for the cnn "
                             f"(conv2 output {h2}x{w2}; need >= 2x2)")
        flat = c2 * (h2 // 2) * (w2 // 2)
        layers = [conv1, ReLU(q=q), conv2, ReLU(q=q), MaxPool2(), Flatten(),
                  Dense(flat, n_classes, gain=1.0, q=q, rng=rng, name="fc1")]
        return Network(layers, input_shape=(1, h, w), q=q)
    if model == "lrt-cnn":
        return _lrt_cnn(input_shape, n_classes=n_classes, q=q, rng=rng, channels=channels,
                        hidden=hidden, b_bn=b_bn)
    raise ValueError(f"unknown model {model!r}; choose 'mlp', 'cnn' or 'lrt-cnn'")


def _lrt_cnn(input_shape, *, n_classes, q, rng, channels, hidden, b_bn) -> Network:
    """The paper's CNN shape: blocks of [conv3x3 -> ReLU -> conv3x3 -> pool2 -> ReLU -> BN]."""
    if len(input_shape) != 2:
        raise ValueError(f"the lrt-cnn model needs image_shape (H, W), got {input_shape!r}")
    h, w = (int(v) for v in input_shape)
    if min(h, w) < 8:
        raise ValueError(f"image_shape {input_shape!r} is too small for the lrt-cnn (need >= 8x8)")
    # Two blocks (the paper's 4 convs, 28x28 -> 4x4) when the image allows, else one (8x8 digits:
    # 6x6 -> 4x4 -> pool 2x2): the same layer types in the same order, half the depth.
    n_blocks = 2 if min(h, w) >= 16 else 1
    chans = tuple(int(c) for c in channels)
    if len(chans) == 1:
        chans = chans * (2 * n_blocks)
    if len(chans) != 2 * n_blocks or min(chans) < 1:
        raise ValueError(f"lrt-cnn channels must be one positive integer or {2 * n_blocks} of them "
                         f"for image_shape {input_shape!r}, got {channels!r}")
    layers, c_in, conv_i = [], 1, 0
    for blk in range(n_blocks):
        for j in range(2):
            conv = Conv2d(c_in, chans[conv_i], 3, gain=2.0, q=q, rng=rng, name=f"conv{conv_i + 1}")
            layers.append(conv)
            h, w = conv.out_hw(h, w)
            c_in = chans[conv_i]
            conv_i += 1
            if j == 0:
                layers.append(ReLU(q=q))
        layers += [MaxPool2(), ReLU(q=q), StreamingBatchNorm(c_in, q=q, b_bn=b_bn, name=f"bn{blk + 1}")]
        h, w = h // 2, w // 2
    layers.append(Flatten())
    width = c_in * h * w
    for i, hd in enumerate(hidden):
        layers += [Dense(width, int(hd), gain=2.0, q=q, rng=rng, name=f"fc{i + 1}"), ReLU(q=q)]
        width = int(hd)
    layers.append(Dense(width, n_classes, gain=1.0, q=q, rng=rng, name=f"fc{len(hidden) + 1}"))
    return Network(layers, input_shape=(1, int(input_shape[0]), int(input_shape[1])), q=q)
