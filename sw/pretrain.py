"""Offline pre-training of a quantised network before deployment (the "factory" model).

The paper pre-trains its CNN in PyTorch (Adam/amsgrad, lr 0.0025, batch 256, 30 epochs,
quantisation-aware from epoch 25). Ours is a quick NumPy stand-in with the same ingredients:
Adam (lr 0.0025, decayed x0.98 per epoch) on float master copies of the weights, biases and
batch-norm parameters; the forward pass always uses the quantised values (quantisation-aware
from the first step, straight-through gradients), mini-batches of 64 samples. The backward pass
runs with float gradients (the 8-bit gradient format is the device's, used online only), and
the streaming batch norm streams its statistics through each batch sample by sample, so its
state at deployment is the one the device continues from.
"""

from __future__ import annotations

import time

import numpy as np

from nms.sw.nn import Network, Quantizer

__all__ = ["pretrain"]


def pretrain(net: Network, X: np.ndarray, y: np.ndarray, *, epochs: int = 3, batch: int = 64,
             lr: float = 2.5e-3, seed: int = 0, progress: bool = False) -> dict:
    """Train ``net`` in place on pre-processed inputs ``X`` (N, *input_shape) and labels ``y``.

    Parameters
    ----------
    net : Network
        Network to train (its stored weights end on the weight grid).
    X, y : ndarray
        Pre-processed inputs (already on the input grid) and integer labels.
    epochs, batch : int, keyword-only
        Passes over the data and mini-batch size.
    lr : float, keyword-only
        Adam learning rate (x0.98 per epoch).
    seed : int, keyword-only
        Shuffling seed.
    progress : bool, keyword-only
        Show a tqdm bar.

    Returns
    -------
    dict
        ``epochs``, ``batch``, ``lr``, ``seconds``, ``train_accuracy_last_epoch`` (running).
    """
    for name, v in (("epochs", epochs), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"pretrain {name} must be an integer >= 1, got {v!r}")
    if not lr > 0:
        raise ValueError(f"pretrain lr must be > 0, got {lr!r}")
    rng = np.random.default_rng([seed, 11])
    qw, qb = net.q["w"], net.q["b"]
    params = []  # (owner, attribute, master copy, quantiser)
    for l in net.weight_layers:
        params += [(l, "W", l.W.astype(np.float64).copy(), qw), (l, "b", l.b.copy(), qb)]
    for bn in net.norm_layers:
        params += [(bn, "gamma", bn.gamma.copy(), qb), (bn, "beta", bn.beta.copy(), qb)]
    m1 = [np.zeros_like(p[2]) for p in params]
    m2 = [np.zeros_like(p[2]) for p in params]
    b1, b2, t = 0.9, 0.999, 0
    saved_g = net.q["g"]
    net.q["g"] = Quantizer(None, clip=1.0, signed=True)  # float backward while pre-training
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=epochs * len(X), desc="pre-train", unit="sample")
    t0 = time.perf_counter()
    correct = 0
    try:
        for ep in range(epochs):
            step_lr = lr * 0.98 ** ep
            correct = 0
            order = rng.permutation(len(X))
            for s in range(0, len(X), batch):
                sel = order[s:s + batch]
                logits = net.forward(X[sel], train=True)
                correct += int((logits.argmax(axis=1) == y[sel]).sum())
                net.backward(logits, y[sel])
                t += 1
                n = len(sel)
                grads = []
                for l in net.weight_layers:
                    grads += [l.grad_W() / n, l.grad_b / n]
                for bn in net.norm_layers:
                    grads += [bn.grad_gamma / n, bn.grad_beta / n]
                for k, ((owner, attr, master, q), g) in enumerate(zip(params, grads)):
                    m1[k] = b1 * m1[k] + (1 - b1) * g
                    m2[k] = b2 * m2[k] + (1 - b2) * g * g
                    mh = m1[k] / (1 - b1 ** t)
                    vh = m2[k] / (1 - b2 ** t)
                    master -= step_lr * mh / (np.sqrt(vh) + 1e-8)
                    if attr == "W":
                        np.clip(master, -1.0, 1.0, out=master)
                    setattr(owner, attr, q(master))
                if bar is not None:
                    bar.update(n)
    finally:
        net.q["g"] = saved_g
        if bar is not None:
            bar.close()
    return {"epochs": int(epochs), "batch": int(batch), "lr": float(lr),
            "seconds": time.perf_counter() - t0,
            "train_accuracy_last_epoch": correct / len(X)}
