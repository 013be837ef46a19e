"""Pooling in front of the kNN (issue 11, docs/energy.md §6.1): the bit-exact model
(``nms.verif.models.pool``) against an explicit loop, its refusals, and DE-SNE with it."""

from __future__ import annotations

import numpy as np
import pytest

from nms.verif.models import desne
from nms.verif.models.pool import check_image, pool_code, pool_vectors, pooled_dim


def _loop_pool(img, w):
    side = img.shape[0] // w
    return [sum(int(img[r * w + a, c * w + b]) for a in range(w) for b in range(w)) // (w * w)
            for r in range(side) for c in range(side)]


@pytest.mark.parametrize("side, code, w", [(28, 1, 2), (28, 2, 4), (8, 1, 2), (8, 2, 4),
                                           (12, 2, 4), (2, 1, 2)])
def test_pool_vectors_equal_an_explicit_loop(side, code, w):
    rng = np.random.default_rng(side * 10 + code)
    X = rng.integers(0, 256, size=(4, side * side))
    X[0] = 255                                   # the largest sums: no saturation, 255 out
    got = pool_vectors(X, code)
    assert got.shape == (4, (side // w) ** 2) == (4, pooled_dim(side * side, code))
    for i in range(4):
        assert got[i].tolist() == _loop_pool(X[i].reshape(side, side), w)
    assert (got[0] == 255).all()
    assert pool_vectors(X, 0) is X and pooled_dim(45, 0) == 45


@pytest.mark.parametrize("dim, pool, img_w, match", [
    (100, 2, None, "side divisible by 4; img_w=10"),
    (45, 1, None, "square image: img_w=6 but dim=45"),
    (64, 1, 7, "square image: img_w=7 but dim=64"),
    (36, 2, 6, "side divisible by 4; img_w=6"),
    (64, 3, None, "pool must be a code"),
    (64, "pool8", None, "pool must be one of"),
])
def test_unpoolable_images_are_refused(dim, pool, img_w, match):
    with pytest.raises(ValueError, match=match):
        check_image(dim, pool, img_w)
    if pool in (1, 2):
        with pytest.raises(ValueError, match=match):
            pool_vectors(np.zeros((2, dim), dtype=np.int64), pool, img_w)


def test_default_pool_per_data_set():
    from nms.verif.models.pool import default_pool

    assert default_pool(784) == "pool4"          # Fashion-MNIST 28x28 -> 7x7 (the sweep's choice)
    assert default_pool(64) == "none"            # digits 8x8: 2x2 leaves 16, 4x4 only 4
    assert default_pool(56 * 56) == "pool4" and default_pool(20 * 20) == "pool2"
    assert default_pool(12 * 12) == "none"        # 2x2 would leave 36 < 49
    assert default_pool(14 * 14) == "pool2"      # 14 is not a multiple of 4; 7x7 = 49 after 2x2
    assert default_pool(45) == "none"            # not a square image
    with pytest.raises(ValueError, match="dim"):
        default_pool(0)


def test_names_and_codes():
    assert [pool_code(n) for n in ("none", "pool2", "pool4")] == [0, 1, 2]
    with pytest.raises(ValueError, match="True"):
        pool_code(True)


def test_run_chunk_with_pooling_uses_pooled_vectors():
    rng = np.random.default_rng(4)
    X = rng.integers(0, 256, size=(30, 64))
    cfg = desne.DesneConfig(k=8, perplexity=5.0, n_iter=10, exaggeration_iters=3,
                            momentum_switch=3, capacity=64)
    for pool, code in (("pool2", 1), ("pool4", 2)):
        res = desne.run_chunk(X, 4, cfg.replace(pool=pool), 3)
        nbr, dist = desne.knn(pool_vectors(X, code), cfg.k)
        assert np.array_equal(res["nbr"], nbr) and np.array_equal(res["dist"], dist)
    plain = desne.run_chunk(X, 4, cfg, 3)
    assert np.array_equal(plain["nbr"], desne.knn(X, cfg.k)[0])
    with pytest.raises(ValueError, match="DesneConfig.pool"):
        cfg.replace(pool="pca")
    y = np.repeat([0, 1], 15)
    with pytest.raises(ValueError, match="side divisible by 4"):
        desne.select(rng.integers(0, 256, size=(30, 36)), y, 0.2, cfg.replace(pool="pool4"))


# ------------------------------------------------------------------------------------------------
# the pooling unit (rtl/pool.py)

from amaranth.back import verilog

from nms.rtl.pool import PoolUnit
from nms.verif.sim.build import run_cocotb


@pytest.mark.parametrize("kwargs, err, match", [
    ({"lanes": 6}, ValueError, "lanes=6 is not a power of two"),
    ({"lanes": 0}, ValueError, "lanes=0"),
    ({"elem_width": 17}, ValueError, "elem_width=17"),
    ({"max_dim": 0}, ValueError, "max_dim=0"),
    ({"max_dim": 784.0}, TypeError, "max_dim must be an int"),
])
def test_pool_unit_bad_parameters_are_named(kwargs, err, match):
    with pytest.raises(err, match=match):
        PoolUnit(**kwargs)


def test_pool_unit_sizes():
    u = PoolUnit(lanes=8, max_dim=784)
    assert (u.max_side, u.sums, u.sum_width) == (28, 14, 12)
    assert u.parameters == {"lanes": 8, "elem_width": 8, "max_dim": 784}


def test_pool_unit_bit_exact_under_stalls():
    """Fashion-MNIST-sized and digits-sized images, both windows, the pass-through, the smallest
    images and saturated pixels, back to back, random idle cycles and back-pressure."""
    rng = np.random.default_rng(7)
    jobs = []
    for dim, pool, side, n in ((784, 2, 28, 4), (784, 1, 28, 3), (64, 1, 8, 6), (64, 2, 8, 6),
                               (45, 0, 0, 5), (784, 0, 0, 2), (16, 2, 4, 5), (4, 1, 2, 5),
                               (144, 2, 12, 3)):
        X = rng.integers(0, 256, size=(n, dim))
        X[0] = 255
        jobs.append({"X": X.tolist(), "pool": pool, "img_w": side})
    from nms.sw.datasets import load_digits

    d = load_digits().X_train.reshape(-1, 64)[:12]
    jobs.append({"X": d.tolist(), "pool": 1, "img_w": 8})
    v = verilog.convert(PoolUnit(lanes=8, max_dim=784), name="top", emit_src=False)
    run_cocotb("pool_l8_d784", v, "nms.verif.tb.pool",
               {"unit": {"lanes": 8, "max_dim": 784}, "jobs": jobs, "idle": 0.3,
                "backpressure": 0.4, "seed": 3})


# ------------------------------------------------------------------------------------------------
# the job interface: OPT.pool / OPT.img_w and the chunk-buffer rule, declared once (rtl/regmap.py)

from nms.rtl import regmap


def _job(**kw):
    job = {f.key: 0 for f in regmap.JOB_FIELDS}
    job.update(n=50, dim=64, budget=3, learning_rate=32)
    job.update(kw)
    return job


STREAM = {"capacity": 128, "max_dim": 64}
BUFFERED = {**STREAM, "lanes": 8, "buffer_depth": 256, "pool_max": 2}   # DesneDatapath(buffer_dim=16)


@pytest.mark.parametrize("params, job, cause, text", [
    (STREAM, {"pool": 1, "img_w": 8}, "BAD_OPT_POOL", "OPT.pool must be <= pool_max (= 0), not 1"),
    (BUFFERED, {"pool": 3}, "BAD_OPT_POOL", "OPT.pool must be <= pool_max (= 2), not 3"),
    (BUFFERED, {"pool": 1, "img_w": 7}, "BAD_IMAGE", "OPT.img_w must be the side of the square "
     "image of DIM = 64 elements (OPT.img_w² = DIM) and a multiple of 2"),
    (BUFFERED, {"pool": 2, "img_w": 6, "dim": 36}, "BAD_IMAGE", "a multiple of 4 (OPT.pool = 2"),
    (BUFFERED, {"pool": 0}, "BAD_CHUNK_BUFFER", "N must be at most 32 (N · ceil(D'/L) = N · 8 "
     "words must fit the 256-word chunk buffer), not 50"),
    (BUFFERED, {"pool": 1, "img_w": 8, "n": 128, "budget": 3}, None, None),   # 128 x 2 = 256 words
    (BUFFERED, {"pool": 0, "n": 32}, None, None),
    (STREAM, {"pool": 0, "n": 128}, None, None),                              # no buffer, no limit
])
def test_pool_and_buffer_refusals(params, job, cause, text):
    r = regmap.refusal(_job(**job), params)
    if cause is None:
        assert r is None
        return
    assert r.cause.name == cause and text in r.message(), r.message()
    assert regmap.explain(r.cause.code, _job(**job), params) == r.message()
    # the RTL's priority chain is the same walk: its first true condition has the same code
    conds = regmap.refusal_conditions(_job(**job), params)
    assert next(code for c, code in conds if c) == r.cause.code


def test_model_device_refuses_and_runs_pooled_jobs_like_the_rtl():
    """The model backend with the chunk buffer (``buffer_dim``) runs a pooled job equal to
    ``run_chunk`` with ``cfg.pool`` and reports the buffered counters; an image the window does
    not divide and a chunk too big for the buffer are refused with the declared cause, naming
    the field; a device without the pooling unit refuses a pooled job."""
    from nms.sw.dataflow import rtl_counters
    from nms.sw.driver import Driver, JobRefusedError, ModelDevice, read_counters

    rng = np.random.default_rng(12)
    X = rng.integers(0, 256, size=(40, 64)).astype(np.uint8)
    y = np.zeros(40, dtype=np.int64)
    cfg = desne.DesneConfig(k=8, neg_samples=4, capacity=64, perplexity=5.0, n_iter=6,
                            exaggeration_iters=2, momentum_switch=2, pool="pool2")
    dev = ModelDevice(capacity=64, max_dim=64, k=8, neg_samples=4, tile=4, buffer_dim=16)
    assert dev.params["buffer_depth"] == 128 and dev.params["pool_max"] == 2
    drv = Driver(dev, cfg)
    got = drv.select(X, y, 0.1, seed=1)
    want = desne.select(X, y, 0.1, cfg, seed=1)
    assert np.array_equal(got["indices"], want["indices"])
    regs = read_counters(dev)
    c = rtl_counters(n=40, dim=64, budget=4, n_iter=6, k=8, neg_samples=4, tile=4, lanes=8,
                     buffer=True, pool="pool2", cand_tile=dev.cand_tile)   # P = 4, the default
    assert regs["BYTES_READ"] == 40 * 64 == c["bytes_read"]
    for key in ("mem_beats", "dist_beats", "buf_read_beats", "buf_write_beats",
                "query_rows_read", "pair_items", "rep_items"):
        assert regs[f"PERF_{key.upper()}"] == c[key], key
    with pytest.raises(JobRefusedError, match=r"OPT.img_w must be .* multiple of 4.*BAD_IMAGE"):
        Driver(dev, cfg.replace(pool="pool4")).run_job(
            Driver(dev, cfg.replace(pool="pool4")).job_values(10, 36, 2, 1), 0, 1 << 16)
    with pytest.raises(JobRefusedError, match=r"N must be at most 16 .*BAD_CHUNK_BUFFER"):
        Driver(dev, cfg.replace(pool="none")).run_job(
            Driver(dev, cfg.replace(pool="none")).job_values(20, 64, 2, 1), 0, 1 << 16)
    plain = Driver(ModelDevice(capacity=64, max_dim=64, k=8, neg_samples=4, tile=4, buffer_dim=0,
                               cand_tile=1), cfg)
    with pytest.raises(JobRefusedError, match=r"OPT.pool must be <= pool_max \(= 0\), not 1"):
        plain.run_job(plain.job_values(10, 64, 2, 1), 0, 1 << 16)
    with pytest.raises(ValueError, match="no pooling unit"):   # the host says so before a job
        plain.select(X, y, 0.1, seed=1)


def test_float_reference_pools_like_the_model():
    """The float reference runs its kNN on the same pooled vectors (same lists as the model)."""
    from nms.verif.models import desne_float

    rng = np.random.default_rng(15)
    X = rng.integers(0, 256, size=(30, 64))
    cfg = desne.DesneConfig(k=8, perplexity=5.0, n_iter=10, exaggeration_iters=3,
                            momentum_switch=3, capacity=64, pool="pool2")
    a, b = desne.run_chunk(X, 4, cfg, 2), desne_float.run_chunk(X, 4, cfg, 2)
    assert np.array_equal(a["nbr"], b["nbr"]) and np.array_equal(a["dist"], b["dist"])
    assert not np.array_equal(desne_float.run_chunk(X, 4, cfg.replace(pool="none"), 2)["nbr"],
                              b["nbr"])
