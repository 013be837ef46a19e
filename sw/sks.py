"""Streaming Kronecker-sum (SKS) rank-r gradient estimator with the OK unbiased step.

The mini-batch gradient of a linear layer is a sum of outer products ``G = sum_i dz_i a_i^T``.
:class:`SKS` keeps a rank-``r`` estimate ``L~ R~^T`` of that sum in ``(n + m)(r + 1) + r`` numbers,
adding one outer product at a time (Gural et al., "Low-Rank Training of Deep Neural Networks for
Emerging Memory Technology", Algorithm 1, built on the optimal Kronecker-sum approximation OK of
Benzing et al., ICML 2019). Each step is conditionally unbiased given the previous state, so the
estimate after a stream of steps is unbiased for the exact sum (tower property); the kappa-skip
and the 16-bit re-quantisation of the factors break exactness slightly, as in the authors' code.

State: orthonormal bases ``Q_L`` (n x r), ``Q_R`` (m x r) and coefficients ``c_x`` (r,) with
``L~ R~^T = Q_L diag(c_x) Q_R^T``. One step:

1. modified Gram-Schmidt of ``dz`` against ``Q_L`` and of ``a`` against ``Q_R`` gives in-span
   coefficients ``c_L, c_R`` and residual norms ``nu, nw``;
2. ``C = [c_L; nu][c_R; nw]^T + diag(c_x, 0)`` (q x q, q = r + 1) and its SVD ``U S V^T``;
3. the q singular values are reduced to rank r by the minimum-variance unbiased mixing of OK
   (random signs, Householder construction), or by plain truncation (``zerovar=True``, biased);
4. ``Q_L <- [Q_L | u/nu] U Q_x``, ``Q_R <- [Q_R | w/nw] V Q_x``; the bases stay orthonormal.

:meth:`SKS.add_block` adds a whole block of terms at once (a conv layer's per-pixel terms of one
sample): the exact SVD of ``state + sum_p dz_p a_p^T``, then the rank is brought back to ``r``
by repeated OK steps (:func:`ok_reduce`), each conditionally unbiased, so the block update is
unbiased too. It replaces P sequential rank-(r+1) SVDs by one small SVD per sample.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SKS", "ok_mixing", "ok_reduce", "quantize_dynamic"]


def quantize_dynamic(x: np.ndarray, bits: int) -> np.ndarray:
    """Round ``x`` to a signed ``bits``-bit grid scaled by its own max-abs entry.

    Parameters
    ----------
    x : ndarray
        Matrix to quantise.
    bits : int
        Total bits including sign (the authors store the SKS factors at 16 bit).

    Returns
    -------
    ndarray
        ``floor(x / step + 0.5) * step`` with ``step = max|x| / (2**(bits-1) - 1)``; an all-zero
        input is returned unchanged.
    """
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0.0:
        return x
    step = peak / (2 ** (bits - 1) - 1)
    return np.floor(x / step + 0.5) * step


def ok_mixing(sigma: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-variance unbiased rank-(q-1) estimate of ``diag(sigma)`` (the OK step).

    Parameters
    ----------
    sigma : ndarray, shape (q,)
        Singular values in descending order, ``q >= 2``, smallest one > 0.
    rng : numpy.random.Generator
        Source of the independent uniform random signs.

    Returns
    -------
    Qx : ndarray, shape (q, q-1)
        Mixing matrix; ``Qx diag(cx) Qx^T`` equals ``diag(sigma)`` in expectation over the signs.
    cx : ndarray, shape (q-1,)
        New coefficients: the kept ``sigma[:m]`` then ``s1 / k`` repeated ``k`` times.
    """
    q = sigma.shape[0]
    r = q - 1
    # m = smallest i with (q-1-i) sigma_i <= sum_{j>=i} sigma_j; i = q-2 always satisfies it,
    # so k = q-1-m >= 1 and the Householder block below is never empty. q is tiny (r + 1), so
    # the whole construction runs on plain Python floats (the same IEEE operations, element by
    # element, as the array form) and builds Qx with one array call: NumPy's per-call overhead
    # was most of this function's cost, and it runs ~16 times per sample for a CNN.
    sig = sigma.tolist()
    tails = [0.0] * q
    acc = 0.0
    for i in range(q - 1, -1, -1):
        acc += sig[i]
        tails[i] = acc
    m = next(i for i in range(q) if (r - i) * sig[i] <= tails[i] * (1 + 1e-12))
    k = r - m
    s1 = tails[m]
    ks = k / s1
    # x0 = sqrt(1 - k sigma / s1), a unit vector of length k+1; v = x0 - e0. Householder
    # H = I + v v^T / v_0 maps e0 to x0; its other k columns are an orthonormal basis of x0's
    # complement (X X^T = I - x0 x0^T), built without a QR.
    v = [math.sqrt(max(1.0 - ks * x, 0.0)) for x in sig[m:]]
    v[0] -= 1.0
    v0 = v[0]
    w = [x / v0 for x in v[1:]]
    signs = (rng.random(k + 1) < 0.5).tolist()
    rows = []
    for i in range(m):
        row = [0.0] * r
        row[i] = 1.0
        rows.append(row)
    for i in range(k + 1):
        vi = v[i]
        blk = [vi * wj for wj in w]
        if i:
            blk[i - 1] += 1.0
        if signs[i]:
            blk = [-x for x in blk]
        rows.append([0.0] * m + blk)
    Qx = np.array(rows)
    cx = np.array(sig[:m] + [s1 / k] * k)
    return Qx, cx


def ok_reduce(sigma: np.ndarray, rank: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased rank-``rank`` estimate of ``diag(sigma)`` by repeated OK steps (q -> q-1 -> ... -> r).

    Each :func:`ok_mixing` step is unbiased given the previous one, so by the tower property
    ``E[Q diag(c) Q^T] = diag(sigma)``. (Not the single-step minimum-variance estimate of
    Benzing et al. for q - r > 1, which needs a projection with a prescribed diagonal; the kept
    large singular values are exact in both.)

    Parameters
    ----------
    sigma : ndarray, shape (q,)
        Singular values, descending, ``q > rank`` and ``sigma[0] > 0``.
    rank : int
        Target rank ``r >= 1``.
    rng : numpy.random.Generator
        Sign source.

    Returns
    -------
    Q : ndarray, shape (q, rank)
        Orthonormal columns.
    c : ndarray, shape (rank,)
        Descending coefficients.
    """
    q = sigma.shape[0]
    Q = None
    c = sigma
    while c.shape[0] > rank:
        Qx, c = ok_mixing(c, rng)  # output stays descending (the kept values exceed s1 / k)
        Q = Qx if Q is None else Q @ Qx
    return (np.eye(q)[:, :rank] if Q is None else Q), c


class SKS:
    """Streaming rank-r estimate of a sum of outer products ``sum_i dz_i a_i^T``.

    Parameters
    ----------
    n, m : int
        Lengths of ``dz`` (output side) and ``a`` (input side); the estimate is n x m.
    rank : int, keyword-only
        Rank ``r >= 1`` of the estimate (default 4, the paper's setting).
    kappa_th : float or None, keyword-only
        Skip a sample when ``c_x[0] > kappa_th * nu * nw`` (the new direction would make the q x q
        problem ill-conditioned). As in the authors' code the WHOLE sample is dropped, including
        its in-span part. ``None`` disables the skip. Default 100.
    zerovar : bool, keyword-only
        If True use the biased truncated SVD (keep the top r singular triplets) instead of the
        unbiased OK mixing. Default False.
    factor_bits : int or None, keyword-only
        Re-quantise the bases to this many bits (per-matrix max-abs scale) after Gram-Schmidt and
        after each update, as the authors' code does (16). ``None`` keeps float64.
    rng : numpy.random.Generator or int or None, keyword-only
        Generator (or seed) for the random signs.

    Attributes
    ----------
    QL, QR : ndarray
        Bases, shapes (n, r) and (m, r); zero columns until enough terms have arrived.
    cx : ndarray, shape (r,)
        Coefficients, descending where exact.
    n_added, n_skipped : int
        Terms offered since the last :meth:`reset` and how many of them the kappa-skip dropped.
    """

    def __init__(self, n: int, m: int, *, rank: int = 4, kappa_th: float | None = 100.0,
                 zerovar: bool = False, factor_bits: int | None = 16,
                 rng: np.random.Generator | int | None = None):
        for name, val in (("n", n), ("m", m), ("rank", rank)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
                raise ValueError(f"SKS {name} must be an integer >= 1, got {val!r}")
        if kappa_th is not None and not (float(kappa_th) > 0):
            raise ValueError(f"SKS kappa_th must be > 0 or None, got {kappa_th!r}")
        if factor_bits is not None and (not isinstance(factor_bits, (int, np.integer))
                                        or not 2 <= factor_bits <= 52):
            raise ValueError(f"SKS factor_bits must be an integer in [2, 52] or None, got {factor_bits!r}")
        self.n, self.m, self.rank = int(n), int(m), int(rank)
        self.kappa_th = None if kappa_th is None else float(kappa_th)
        self.zerovar = bool(zerovar)
        self.factor_bits = factor_bits
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._diag = (np.arange(self.rank), np.arange(self.rank))
        self.reset()

    def reset(self) -> None:
        """Forget the accumulated sum (after a weight write)."""
        self.QL = np.zeros((self.n, self.rank))
        self.QR = np.zeros((self.m, self.rank))
        self.cx = np.zeros(self.rank)
        self._live = 0  # basis columns that can be nonzero (skip MGS against all-zero columns)
        self.n_added = 0
        self.n_skipped = 0

    def _q(self, x: np.ndarray) -> np.ndarray:
        return x if self.factor_bits is None else quantize_dynamic(x, self.factor_bits)

    def add(self, dz: np.ndarray, a: np.ndarray) -> bool:
        """Add the outer product ``dz a^T`` to the estimate.

        Parameters
        ----------
        dz : ndarray, shape (n,)
            Output-side vector (the error at the layer's pre-activation).
        a : ndarray, shape (m,)
            Input-side vector (the layer's input).

        Returns
        -------
        bool
            False if the term was dropped by the kappa-skip (or is exactly zero), True otherwise.
        """
        dz = np.asarray(dz, dtype=np.float64).reshape(-1)
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        if dz.shape[0] != self.n or a.shape[0] != self.m:
            raise ValueError(f"SKS.add expects dz of length {self.n} and a of length {self.m}, "
                             f"got {dz.shape[0]} and {a.shape[0]}")
        self.n_added += 1
        if not (dz.any() and a.any()):
            return False  # zero term: nothing to add (saves an SVD per idle conv pixel)
        r = self.rank
        QL, QR = self.QL, self.QR
        cL = np.zeros(r + 1)
        cR = np.zeros(r + 1)
        u, w = dz, a
        live = self._live
        if live:
            # Classical Gram-Schmidt run twice ("CGS2"): as robust as modified Gram-Schmidt on
            # the nearly orthonormal 16-bit bases, but two matrix-vector products per side
            # instead of a Python loop over the columns.
            BL, BR = QL[:, :live], QR[:, :live]
            c1 = u @ BL
            u = u - BL @ c1
            c2 = u @ BL
            u = u - BL @ c2
            cL[:live] = c1 + c2
            c1 = w @ BR
            w = w - BR @ c1
            c2 = w @ BR
            w = w - BR @ c2
            cR[:live] = c1 + c2
        eps = 1e-12
        nu = float(np.sqrt(u @ u)) + eps
        nw = float(np.sqrt(w @ w)) + eps
        if self.kappa_th is not None and self.cx[0] > self.kappa_th * nu * nw:
            self.n_skipped += 1
            return False
        QLq = np.empty((self.n, r + 1))
        QLq[:, :r] = QL
        QLq[:, r] = u / nu
        QRq = np.empty((self.m, r + 1))
        QRq[:, :r] = QR
        QRq[:, r] = w / nw
        QLq, QRq = self._q(QLq), self._q(QRq)
        cL[r] = nu
        cR[r] = nw
        C = cL[:, None] * cR[None, :]
        C[self._diag] += self.cx
        U, sigma, Vt = np.linalg.svd(C)
        if not self.zerovar and sigma[-1] > 1e-12 * sigma[0]:
            Qx, cx = ok_mixing(sigma, self.rng)
            self.QL = self._q(QLq @ (U @ Qx))
            self.QR = self._q(QRq @ (Vt.T @ Qx))
        else:
            # Rank-deficient (exact: nothing is lost) or the biased truncated variant.
            cx = sigma[:r].copy()
            self.QL = self._q(QLq @ U[:, :r])
            self.QR = self._q(QRq @ Vt[:r].T)
        self.cx = cx
        self._live = min(self._live + 1, r)
        return True

    def add_block(self, dZ: np.ndarray, A: np.ndarray) -> int:
        """Add ``sum_p dZ[p] A[p]^T`` in one step (exact SVD of state + block, then :func:`ok_reduce`).

        The kappa-skip does not apply (it is a per-term rule). With ``zerovar`` the rank is cut
        by plain truncation (biased).

        Parameters
        ----------
        dZ : ndarray, shape (P, n)
            Output-side vectors.
        A : ndarray, shape (P, m)
            Input-side vectors.

        Returns
        -------
        int
            Number of nonzero terms in the block.
        """
        dZ = np.asarray(dZ, dtype=np.float64)
        A = np.asarray(A, dtype=np.float64)
        if dZ.ndim != 2 or A.ndim != 2 or dZ.shape[0] != A.shape[0] or dZ.shape[1] != self.n \
                or A.shape[1] != self.m:
            raise ValueError(f"SKS.add_block expects dZ (P, {self.n}) and A (P, {self.m}), got "
                             f"shapes {dZ.shape} and {A.shape}")
        self.n_added += dZ.shape[0]
        nz = dZ.any(axis=1) & A.any(axis=1)
        if not nz.any():
            return 0
        dZ, A = dZ[nz], A[nz]
        r, live = self.rank, self._live
        if dZ.shape[0] + live < min(self.n, self.m):
            # Thin route: QR of [Q_L c_x^(1/2) | dZ^T] and [Q_R c_x^(1/2) | A^T], SVD of the core.
            s = np.sqrt(self.cx[:live])
            QLb, RL = np.linalg.qr(np.hstack([self.QL[:, :live] * s, dZ.T]))
            QRb, RR = np.linalg.qr(np.hstack([self.QR[:, :live] * s, A.T]))
            U, sigma, Vt = np.linalg.svd(RL @ RR.T)
            U, V = QLb @ U, QRb @ Vt.T
        else:
            # Dense route (conv layers: few output channels): the n x m sum itself.
            G = dZ.T @ A
            if live:
                G += (self.QL[:, :live] * self.cx[:live]) @ self.QR[:, :live].T
            U, sigma, Vt = np.linalg.svd(G, full_matrices=False)
            V = Vt.T
        keep = int(np.count_nonzero(sigma > 1e-12 * sigma[0])) if sigma[0] > 0 else 0
        if keep == 0:
            return int(nz.sum())
        U, V, sigma = U[:, :keep], V[:, :keep], sigma[:keep]
        QL = np.zeros((self.n, r))
        QR = np.zeros((self.m, r))
        cx = np.zeros(r)
        if keep <= r:  # exact: nothing lost
            QL[:, :keep], QR[:, :keep], cx[:keep] = U, V, sigma
        elif self.zerovar:
            QL[:], QR[:], cx[:] = U[:, :r], V[:, :r], sigma[:r]
        else:
            Qx, cx[:] = ok_reduce(sigma, r, self.rng)
            QL[:], QR[:] = U @ Qx, V @ Qx
        self.QL, self.QR, self.cx = self._q(QL), self._q(QR), cx
        self._live = min(keep, r)
        return int(nz.sum())

    def add_many(self, dZ: np.ndarray, A: np.ndarray) -> int:
        """Add ``sum_p dZ[p] A[p]^T`` one row at a time (a conv layer's per-pixel terms).

        Returns
        -------
        int
            Number of terms that were not skipped.
        """
        dZ = np.asarray(dZ, dtype=np.float64)
        A = np.asarray(A, dtype=np.float64)
        if dZ.ndim != 2 or A.ndim != 2 or dZ.shape[0] != A.shape[0]:
            raise ValueError(f"SKS.add_many expects 2-D dZ, A with equal row counts, got shapes "
                             f"{dZ.shape} and {A.shape}")
        return sum(self.add(dZ[p], A[p]) for p in range(dZ.shape[0]))

    def grab(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the factors ``L~ = Q_L diag(sqrt(c_x))`` (n x r) and ``R~`` (m x r)."""
        s = np.sqrt(np.maximum(self.cx, 0.0))
        return self.QL * s, self.QR * s

    def estimate(self) -> np.ndarray:
        """Return the dense n x m estimate ``L~ R~^T`` (for tests and diagnostics)."""
        L, R = self.grab()
        return L @ R.T

    @property
    def memory_values(self) -> int:
        """Numbers of state the hardware would keep: ``(n + m)(r + 1) + r``."""
        return (self.n + self.m) * (self.rank + 1) + self.rank
