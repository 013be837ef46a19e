"""NVM weight drift models of Gural et al. (section 6.2 of the research notes ``lrt.md``).

Every ``every`` samples (d = 10) a drift step is applied to every conv/dense weight cell:

* **analog** — each stored value gets Gaussian noise ``N(0, sigma0 / sqrt(horizon / every))``
  (sigma0 = 10, horizon = 1e6 samples: std 0.0316 per step on the [-1, 1] weight scale) and is
  clipped to [-1, 1]. The value leaves the 8-bit grid; the network reads it through the weight
  quantiser (``Qw(W)``), and a write programs a cell back onto the grid.
* **digital** — each of the 8 bits of the offset-binary code ``round(W / LSB) + 2^(bits-1)`` flips
  independently with ``p = p0 / (horizon / every)`` (p0 = 10: 1e-4 per bit per step). The
  authors' code draws Binomial(2, p) per bit, roughly doubling the rate; we use the rate the
  paper states.

Over 1e5 samples both accumulate far beyond the weights' own scale (analog: total std ~3.2;
digital: about one flip per bit), so a network that cannot rewrite its weights forgets.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["WeightDrift", "DRIFT_KINDS"]

DRIFT_KINDS = ("analog", "digital")


class WeightDrift:
    """Periodic drift of a network's NVM weights.

    Parameters
    ----------
    kind : {"analog", "digital"}
        Drift model.
    every : int, keyword-only
        Samples between drift steps (default 10).
    sigma0 : float, keyword-only
        Analog drift strength per ``horizon`` samples (default 10).
    p0 : float, keyword-only
        Digital flips per bit per ``horizon`` samples (default 10).
    horizon : float, keyword-only
        Samples the strengths refer to (default 1e6).
    weight_bits : int, keyword-only
        Word length of the stored weights (default 8).
    rng : numpy.random.Generator or int, keyword-only
        Noise source (the same seed gives every method the same drift sequence).
    """

    def __init__(self, kind: str, *, every: int = 10, sigma0: float = 10.0, p0: float = 10.0,
                 horizon: float = 1e6, weight_bits: int = 8, rng=0):
        if kind not in DRIFT_KINDS:
            raise ValueError(f"drift kind must be one of {DRIFT_KINDS}, got {kind!r}")
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"drift every must be an integer >= 1, got {every!r}")
        for name, v in (("sigma0", sigma0), ("p0", p0), ("horizon", horizon)):
            if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"drift {name} must be a finite number >= 0, got {v!r}")
        if not horizon > 0:
            raise ValueError(f"drift horizon must be > 0, got {horizon!r}")
        self.kind, self.every, self.bits = kind, int(every), int(weight_bits)
        self.std = float(sigma0) / math.sqrt(float(horizon) / self.every)
        self.p = float(p0) / (float(horizon) / self.every)
        if not self.p <= 1:
            raise ValueError(f"digital flip probability p0 * every / horizon = {self.p} exceeds 1")
        self.lsb = 2.0 ** -(self.bits - 1)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.steps = 0
        self.flips = 0

    def after_sample(self, net, samples_seen: int) -> bool:
        """Apply a drift step if ``samples_seen`` is a multiple of ``every``; return whether it did."""
        if samples_seen % self.every:
            return False
        self.apply(net)
        return True

    def apply(self, net) -> None:
        """One drift step on every weight layer of ``net``."""
        self.steps += 1
        for layer in net.weight_layers:
            if self.kind == "analog":
                layer.W = np.clip(layer.W + self.rng.normal(0.0, self.std, layer.W.shape), -1.0, 1.0)
            else:
                layer.W = self._flip(layer.W)

    def _flip(self, W: np.ndarray) -> np.ndarray:
        half = 2 ** (self.bits - 1)
        codes = (np.floor(W / self.lsb + 0.5).astype(np.int64) + half).ravel()
        n_bits = codes.size * self.bits
        # Independent flips at rate p are sparse: draw how many, then where (distinct positions).
        k = int(self.rng.binomial(n_bits, self.p))
        if k:
            pos = self.rng.choice(n_bits, size=k, replace=False)
            cell, bit = np.divmod(pos, self.bits)
            np.bitwise_xor.at(codes, cell, np.left_shift(1, bit))
            self.flips += k
        return ((codes - half) * self.lsb).reshape(W.shape)
