"""SKS and SGD trainers on quantised weights: grid, write counting, accuracy floors, API errors."""

import numpy as np
import pytest

from nms.sw.datasets import load_dataset
from nms.sw.lrt import MaxNorm, SGDTrainer, SKSTrainer, prepare_inputs, train_sgd, train_sks
from nms.sw.nn import QuantConfig, Quantizer, build_model


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return ds.X_train, ds.y_train, ds.X_test, ds.y_test


def _net(model, shape, seed=0, **q):
    return build_model(model, input_shape=shape, n_classes=10, quant=QuantConfig(**q),
                       rng=np.random.default_rng(seed))


def _prep(X, model):
    return QuantConfig().quantizers()["in"](prepare_inputs(X, model=model, scale=16))


def _assert_on_grid(net, bits=8):
    lsb = 2.0 ** -(bits - 1)
    for layer in net.weight_layers:
        codes = layer.W / lsb
        np.testing.assert_array_equal(codes, np.round(codes))
        assert layer.W.min() >= -1.0 and layer.W.max() <= 1.0 - lsb


def test_quantizer_formats():
    w = Quantizer(8, clip=1.0, signed=True)
    assert (w.step, w.lo, w.hi) == (2 ** -7, -1.0, 1 - 2 ** -7)
    np.testing.assert_array_equal(w(np.array([-3.0, 0.3, 0.99999, 2 ** -8])),
                                  [-1.0, 38 * 2 ** -7, 1 - 2 ** -7, 2 ** -7])  # half rounds up
    a = Quantizer(8, clip=2.0, signed=False)
    assert (a.step, a.lo, a.hi) == (2 ** -7, 0.0, 2 - 2 ** -7)
    assert Quantizer(16, clip=8.0, signed=True).step == 2 ** -12
    assert Quantizer(None, clip=1.0, signed=True)(np.array([5.0]))[0] == 5.0
    with pytest.raises(ValueError, match="bits"):
        Quantizer(0, clip=1.0, signed=True)


@pytest.mark.parametrize("bits", [8, 4])
def test_weights_stay_on_grid(digits, bits):
    Xtr, ytr, _, _ = digits
    X = _prep(Xtr[:300], "mlp")
    for cls, kw in ((SKSTrainer, dict(batch_fc=20, lr=0.05)), (SGDTrainer, dict(lr=1.0))):
        net = _net("mlp", (64,), weight_bits=bits)
        _assert_on_grid(net, bits)
        tr = cls(net, **kw).fit(X, ytr[:300], epochs=1)
        assert tr.write_stats()["total"] > 0
        _assert_on_grid(net, bits)


def test_sks_write_counting_matches_changed_cells(digits):
    Xtr, ytr, _, _ = digits
    X, y = _prep(Xtr[:200], "mlp"), ytr[:200]
    net = _net("mlp", (64,))
    tr = SKSTrainer(net, batch_fc=10, lr=0.02, seed=1)
    applied = 0
    for start in range(0, 200, 10):  # each call streams exactly B samples: one attempt per layer
        W0 = [l.W.copy() for l in net.weight_layers]
        c0 = [c.copy() for c in tr.writes]
        ch0 = [c.copy() for c in tr.writes_changed]
        tr.fit(X[start:start + 10], y[start:start + 10], epochs=1)
        for l, w0, cnt0, cnt, chc0, chc in zip(net.weight_layers, W0, c0, tr.writes, ch0,
                                               tr.writes_changed):
            changed = l.W != w0
            np.testing.assert_array_equal(chc - chc0, changed.astype(np.int64))
            # the paper's count adds every cell with a nonzero quantised increment: the changed
            # cells plus saturated cells at a range end that were pushed further
            paper = cnt - cnt0
            assert set(np.unique(paper)) <= {0, 1} and np.all(paper >= changed)
            extra = (paper == 1) & ~changed
            assert np.all((w0[extra] == -1.0) | (w0[extra] == 1.0 - 2 ** -7))
            # a write is applied only above rho_min, and then it resets the SKS state
            assert paper.mean() == 0 or paper.mean() > tr.rho_min
            applied += int(paper.any())
    stats = tr.layer_stats()
    assert sum(s["writes_applied"] for s in stats) == applied > 0
    assert all(s["write_attempts"] == 20 for s in stats)
    assert all(s["writes_max"] <= s["writes_applied"] for s in stats)


def test_rho_min_gate_blocks_writes(digits):
    Xtr, ytr, _, _ = digits
    net = _net("mlp", (64,))
    W0 = [l.W.copy() for l in net.weight_layers]
    tr = SKSTrainer(net, batch_fc=10, rho_min=1.0).fit(_prep(Xtr[:50], "mlp"), ytr[:50], epochs=1)
    assert tr.write_stats()["total"] == 0
    assert all(np.array_equal(l.W, w) for l, w in zip(net.weight_layers, W0))
    st = tr.state[0]
    assert st["attempts"] == 5 and st["applied"] == 0 and st["mult"] == 50  # keeps accumulating


def test_sgd_write_counting_fc_and_conv_pixels(digits):
    Xtr, ytr, _, _ = digits
    net = _net("cnn", (8, 8))
    tr = SGDTrainer(net, lr=1.0)
    x, y = _prep(Xtr[:1], "cnn"), ytr[:1]
    W0 = [l.W.copy() for l in net.weight_layers]
    tr.fit(x, y, epochs=1)
    conv1, conv2, fc = net.weight_layers
    for i, l in enumerate((conv1, conv2)):
        # count_version 2: one write per output pixel where input and error are both nonzero
        expect = (l.dz_terms != 0).T.astype(int) @ (l.a_terms != 0).astype(int)
        np.testing.assert_array_equal(tr.writes[i], expect)
        np.testing.assert_array_equal(tr.writes_nonzero[i], (l.W != W0[i]).astype(int))
    # dense layers: the paper counts every cell with a nonzero quantised increment; recompute
    # that increment here from the layer's own gradient terms
    inc = np.floor(1.0 * (fc.dz_terms.T @ fc.a_terms) / 2 ** -7 + 0.5)
    np.testing.assert_array_equal(tr.writes[2], (inc != 0).astype(int))
    np.testing.assert_array_equal(tr.writes_changed[2], (fc.W != W0[2]).astype(int))
    assert tr.writes[1].max() > 1  # several pixels hit the same cell in one sample


def test_conv_streams_one_term_per_pixel(digits):
    Xtr, ytr, _, _ = digits
    net = _net("cnn", (8, 8))
    tr = SKSTrainer(net, batch_conv=5, batch_fc=10, seed=0)
    tr.fit(_prep(Xtr[:20], "cnn"), ytr[:20], epochs=1)
    stats = tr.layer_stats()
    assert [s["name"] for s in stats] == ["conv1", "conv2", "fc1"]
    assert stats[0]["sks_terms"] == 20 * 6 * 6 and stats[1]["sks_terms"] == 20 * 4 * 4
    assert stats[2]["sks_terms"] == 20
    _assert_on_grid(net)


def test_digits_accuracy_floors_and_write_ratio(digits):
    # Fixed seeds, 800 training samples x 3 epochs. Measured: SGD 0.887 / SKS 0.813 test
    # accuracy, max writes 1866 vs 24 (78x), total 2.4e6 vs 6.3e4. The floors and ratios sit
    # well below these so they survive BLAS/platform differences; SKS's worst case can never
    # exceed its number of flushes (one write per cell per applied flush).
    Xtr, ytr, Xte, yte = digits
    Xtr, ytr = Xtr[:800], ytr[:800]
    sgd = train_sgd(Xtr, ytr, Xte, yte, model="mlp", epochs=3, seed=0, lr=1.0, scale=16)
    sks = train_sks(Xtr, ytr, Xte, yte, model="mlp", epochs=3, seed=0, rank=4, lr=0.01,
                    maxnorm=False, batch_fc=100, scale=16)
    assert sgd["test_accuracy"] >= 0.80
    assert sks["test_accuracy"] >= 0.72
    flushes = 3 * len(ytr) // 100
    assert sks["writes"]["max"] <= flushes
    assert sgd["writes"]["max"] >= 20 * sks["writes"]["max"]
    assert sgd["writes"]["total"] >= 10 * sks["writes"]["total"]
    for res in (sgd, sks):
        assert set(res) >= {"test_accuracy", "writes", "layers", "history", "seconds"}
        samples = [h["samples"] for h in res["history"]]
        assert samples == sorted(samples) and samples[-1] == 3 * len(ytr)
        assert res["history"][-1]["writes_total"] == res["writes"]["total"]


def test_float_reference_runs(digits):
    Xtr, ytr, Xte, yte = digits
    res = train_sgd(Xtr[:400], ytr[:400], Xte, yte, model="mlp", epochs=2, lr=1.0,
                    quantized=False)
    assert res["test_accuracy"] >= 0.7 and res["quantized"] is False


def test_maxnorm_bounds_output():
    mn = MaxNorm()
    rng = np.random.default_rng(0)
    for scale in (1.0, 100.0, 1e-3):
        assert np.abs(mn(scale * rng.normal(size=20))).max() <= 1.0


@pytest.mark.parametrize("fn, kwargs, exc, match", [
    (train_sks, dict(rank=0), ValueError, "rank"),
    (train_sks, dict(epochs=0), ValueError, "epochs"),
    (train_sgd, dict(model="rnn"), ValueError, "unknown model"),
    (train_sks, dict(batch_size=3), TypeError, "unknown option"),
    (train_sgd, dict(rank=2), TypeError, "unknown option"),
    (train_sks, dict(lr=0.0), ValueError, "lr"),
    (train_sks, dict(rho_min=2.0), ValueError, "rho_min"),
    (train_sgd, dict(conv_count="cells"), ValueError, "conv_count"),
    (train_sks, dict(model="cnn", image_shape=(4, 4)), ValueError, "image_shape"),
])
def test_bad_options(digits, fn, kwargs, exc, match):
    Xtr, ytr, Xte, yte = digits
    with pytest.raises(exc, match=match):
        fn(Xtr[:20], ytr[:20], Xte[:5], yte[:5], **kwargs)


def test_bad_data(digits):
    Xtr, ytr, Xte, yte = digits
    with pytest.raises(ValueError, match="labels"):
        train_sgd(Xtr[:20], ytr[:19], Xte[:5], yte[:5])
    with pytest.raises(TypeError, match="integer label"):
        train_sgd(Xtr[:20], ytr[:20].astype(float), Xte[:5], yte[:5])
    with pytest.raises(ValueError, match="non-negative"):
        train_sgd(-1 * Xtr[:20].astype(int), ytr[:20], Xte[:5], yte[:5])
    with pytest.raises(ValueError, match="not square"):
        train_sks(np.zeros((5, 10), np.uint8), ytr[:5], np.zeros((2, 10), np.uint8), yte[:2],
                  model="cnn")


@pytest.mark.parametrize("k,stride,n", [(3, 1, 1), (3, 1, 3), (4, 4, 2), (3, 2, 1)])
def test_conv_im2col_and_col2im_match_direct_loops(k, stride, n):
    """Forward equals a direct convolution; backward dx is the exact adjoint (loop reference)."""
    from nms.sw.nn import Conv2d

    rng = np.random.default_rng(k + stride + n)
    q = QuantConfig.float().quantizers()
    conv = Conv2d(2, 3, k, stride=stride, gain=2.0, q=q, rng=rng)
    conv.input_grad = True
    x = rng.normal(size=(n, 2, 9, 10))
    z = conv.forward(x, train=True)
    ho, wo = conv.out_hw(9, 10)
    Wk = conv.W.reshape(3, 2, k, k)
    ref = np.zeros((n, 3, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            ref[:, :, i, j] = conv.alpha * np.einsum("nckl,ockl->no", patch, Wk)
    np.testing.assert_allclose(z, ref, atol=1e-12)
    dz = rng.normal(size=z.shape)
    dx = conv.backward(dz)
    dref = np.zeros_like(x)
    for i in range(ho):
        for j in range(wo):
            dref[:, :, i * stride:i * stride + k, j * stride:j * stride + k] += conv.alpha * np.einsum(
                "no,ockl->nckl", dz[:, :, i, j], Wk)
    np.testing.assert_allclose(dx, dref, atol=1e-12)


def test_read_weights_cache_follows_every_assignment():
    net = build_model("mlp", input_shape=(8,), n_classes=3, quant=QuantConfig(),
                      rng=np.random.default_rng(0), hidden=(4,))
    layer = net.weight_layers[0]
    first = layer.read_W()
    assert layer.read_W() is first  # cached
    layer.W = layer.W + 0.3 * 2 ** -7  # off the grid (as after analog drift)
    np.testing.assert_array_equal(layer.read_W(), net.q["w"](layer.W))
    layer.W += 0.5  # in place, then assigned back by +=: the cache must follow
    np.testing.assert_array_equal(layer.read_W(), net.q["w"](layer.W))


def test_write_masks_cells_read_outside_the_grid_and_clips_the_increment():
    """As the authors' code: no update where the read code is clipped; increment = Qw(dW)."""
    net = build_model("mlp", input_shape=(4,), n_classes=2, quant=QuantConfig(),
                      rng=np.random.default_rng(0), hidden=(3,))
    tr = SGDTrainer(net, lr=0.1)
    layer = net.weight_layers[0]
    lsb = 2 ** -7
    W = np.zeros(layer.W.shape)
    W[0, 0] = 1.0            # drifted to the top: code 128, outside [-128, 127]
    W[0, 1] = 1 - 0.4 * lsb  # rounds to 128 as well
    W[0, 2] = 1 - 1.4 * lsb  # rounds to 127: inside
    layer.W = W
    dW = np.full(W.shape, 0.5 * lsb + 1e-9)  # just over half an LSB: one step everywhere
    dW[1, 0] = -5.0                        # huge: clipped to -1 by the weight quantiser
    new, written, changed = tr._write(layer, dW)
    assert not written[0, 0] and not written[0, 1] and written[0, 2]
    assert new[0, 0] == 1.0 and new[0, 1] == W[0, 1]
    assert new[0, 2] == 1 - 2 * lsb
    assert written[1, 0] and new[1, 0] == 1 - lsb  # 0 - (-1) saturates at 1 - LSB
    assert written.sum() == W.size - 2
