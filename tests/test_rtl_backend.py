"""The fast whole-job simulation and ``Driver(backend="rtl")``: the Verilated top (the small test
build of ``tests/test_top.py``) with the C++ AXI4 memory model and CSR master.

* on digits (scikit-learn's training images, 10 %), the rtl backend returns exactly the indices
  of the model backend, chunk by chunk as ``nms run`` selects them, with the same near-memory
  byte counts and real cycle counts;
* refusals report the declared cause through the real CSR path, as the model backend does;
* abort mid-job (memory / kNN phase) through the CSRs, then a clean job, equal to the model;
* the build cache: a second FastSim of the same configuration does not rebuild.
"""

from __future__ import annotations

import numpy as np
import pytest

from nms.rtl import regmap
from nms.sw.driver import TRANSPORTS, Driver, JobRefusedError, ModelDevice
from nms.verif.models import desne

HW = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 4, "capacity": 64,
      "neg_samples": 2, "affinity_lanes": 2, "pair_units": 1, "data_width": 64, "max_burst": 16}
SCHEDULE = {"n_iter": 30, "exaggeration_iters": 10, "momentum_switch": 10, "perplexity": 3.0}


@pytest.fixture(scope="module")
def rtl():
    from nms.sw.transport_rtl import RtlTransport

    t = RtlTransport(hw=HW, latency=12)
    yield t
    t.close()


def _cfg():
    return desne.DesneConfig(k=HW["k"], neg_samples=HW["neg_samples"], capacity=HW["capacity"],
                             **SCHEDULE)


def _model():
    return ModelDevice(capacity=HW["capacity"], max_dim=HW["max_dim"], k=HW["k"],
                       neg_samples=HW["neg_samples"], tile=HW["tile"])


def test_rtl_backend_is_registered():
    assert "rtl" in TRANSPORTS


def test_rtl_backend_equals_model_on_digits(rtl):
    from nms.sw.datasets import load_digits

    ds = load_digits()
    X = ds.X_train.reshape(len(ds.X_train), -1)
    y = ds.y_train
    got = Driver(rtl, _cfg()).select(X, y, 0.1, seed=0)
    want = Driver(_model(), _cfg()).select(X, y, 0.1, seed=0)
    assert got["backend"] == "rtl"
    np.testing.assert_array_equal(got["indices"], want["indices"])
    for key in ("chunks", "near_bytes_read", "near_bytes_written"):
        assert got["counters"][key] == want["counters"][key], key
    assert got["counters"]["cycles"] > 0


def test_refusal_cause_matches_model(rtl):
    drv_rtl, drv_model = Driver(rtl, _cfg()), Driver(_model(), _cfg())
    for bad in ({"budget": 40, "n": 30}, {"n": 65}, {"dim": 65}):
        job = {**drv_rtl.job_values(30, 16, 3, 1), **bad}
        causes = []
        for drv in (drv_rtl, drv_model):
            with pytest.raises(JobRefusedError) as exc:
                drv.run_job(job, 0, 1 << 16)
            causes.append(exc.value.cause.code)
        assert causes[0] == causes[1], (bad, causes)


def test_abort_then_clean_job(rtl):
    rng = np.random.default_rng(2)
    X = rng.integers(0, 256, size=(40, 33))
    rtl.write_mem(0x3001, X.astype(np.uint8).tobytes())
    drv = Driver(rtl, _cfg())
    job = drv.job_values(40, 33, 5, 4)
    drv.program(job, 0x3001, 0x20000)
    drv.start()
    rtl.sim.run(800)          # reading the chunk / kNN (see test_top's xfail for later stages)
    st = regmap.REGMAP["STATUS"].unpack(rtl.read_reg("STATUS"))
    assert st["busy"] == 1
    rtl.write_reg("CTRL", regmap.REGMAP["CTRL"].pack(abort=1))
    rtl.wait()
    st = regmap.REGMAP["STATUS"].unpack(rtl.read_reg("STATUS"))
    assert st["busy"] == 0 and st["cause"] == regmap.CAUSE["ABORTED"].code
    drv.run_job(job, 0x3001, 0x20000)
    got = np.frombuffer(rtl.read_mem(0x20000, 20), dtype="<u4").tolist()
    assert got == desne.run_chunk(X, 5, _cfg(), 4)["selected"].tolist()


def test_build_is_cached(rtl):
    from nms.verif.sim.fastsim import build

    lib, info = build(rtl.hw)           # the transport's configuration (defaults filled in)
    assert info["cached"] and info["build_seconds"] == 0.0
    assert lib.resolve() == rtl.sim.lib_path.resolve()
