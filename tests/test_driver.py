"""Host driver over the register interface: same selection as the model, clear misuse errors."""

import numpy as np
import pytest

from nms.rtl import regmap
from nms.sw.driver import DeviceBusyError, DeviceError, Driver, JobCounters, ModelDevice
from nms.verif.models import desne


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.uint8), y


def test_driver_matches_model_select_with_chunking(digits):
    X, y = digits
    keep = np.isin(y, [0, 1, 2])
    X, y = X[keep], y[keep]
    drv = Driver(ModelDevice(capacity=100))  # every class (~180) is split into 2 chunks
    cfg = drv.config.replace(n_iter=60, exaggeration_iters=20, momentum_switch=20)
    drv.config = cfg
    got = drv.select(X, y, 0.1, seed=5)
    ref = desne.select(X, y, 0.1, cfg, seed=5)
    assert np.array_equal(got["indices"], ref["indices"])
    c = got["counters"]
    assert c["chunks"] == 6
    # documented dataflow: queries loaded once + the chunk streamed once per query tile of 4
    expected = sum(n * 64 + -(-n // 4) * n * 64 for n in
                   [s for lab in (0, 1, 2) for s in
                    (lambda n: [b - a for a, b in desne.chunk_bounds(n, 100)])(int((y == lab).sum()))])
    assert c["near_bytes_read"] == expected
    assert c["near_bytes_written"] == 4 * got["indices"].size
    assert c["cycles"] is None  # the model backend has no clock


def test_start_while_busy_is_refused_and_loses_nothing(digits):
    X, y = digits
    dev = ModelDevice(capacity=256, job_delay_s=0.3)  # latency keeps the job visibly busy
    cfg = desne.DesneConfig(capacity=256, n_iter=10, exaggeration_iters=5)
    drv = Driver(dev, cfg)
    cls = X[y == 4]
    dev.write_mem(0, cls.tobytes())
    drv._program(len(cls), 64, 5, 0, 1 << 16, seed=1)
    drv.start()
    with pytest.raises(DeviceBusyError, match="start while busy"):
        drv.start()
    # at register level a second START (or a parameter write) while busy only raises STATUS.error
    dev.write_reg("CTRL", regmap.REGMAP["CTRL"].pack(start=1))
    dev.write_reg("BUDGET", 7)
    dev.wait()
    st = regmap.REGMAP["STATUS"].unpack(dev.read_reg("STATUS"))
    assert st == {"busy": 0, "done": 1, "error": 1}
    assert dev.read_reg("RESULT_COUNT") == 5
    out = np.frombuffer(dev.read_mem(1 << 16, 20), "<u4")
    nbr, dist = desne.knn(cls.astype(np.int64), 16)
    aff = desne.affinities(dist, cfg.perplexity)
    Y = desne.embed(nbr, aff["P"], cfg, 1)
    assert np.array_equal(out, desne.grid_select(Y, 5))


def test_bad_job_parameters_set_error(digits):
    X, y = digits
    dev = ModelDevice(capacity=64)
    drv = Driver(dev)
    with pytest.raises(DeviceError, match="job failed"):  # N above the device's capacity
        drv.run_chunk(100, 64, 5, 0, 0, 0, counters=JobCounters())


def test_config_must_match_device():
    with pytest.raises(ValueError, match="capacity"):
        Driver(ModelDevice(capacity=64), desne.DesneConfig(capacity=128))
    with pytest.raises(ValueError, match="capacity must be an integer >= 4"):
        ModelDevice(capacity=2)


def test_register_map_is_derived_and_consistent():
    addrs = list(regmap.ADDR.values())
    assert addrs == sorted(set(addrs)) and addrs[0] == 0 and all(a % 4 == 0 for a in addrs)
    opt = regmap.REGMAP["OPT"]
    word = opt.pack(learning_rate=32, exaggeration_shift=2, allocation=1, search=0)
    assert opt.unpack(word) == {"learning_rate": 32, "exaggeration_shift": 2, "allocation": 1, "search": 0}
    with pytest.raises(ValueError, match="does not fit"):
        opt.pack(learning_rate=5000)
    c = regmap.host_constants("c")
    assert "#define NMS_STATUS_ADDR 0x08u" in c and "NMS_OPT_SEARCH_SHIFT 16u" in c
    ns = {}
    exec(regmap.host_constants("py"), ns)
    assert ns["BUDGET_ADDR"] == regmap.ADDR["BUDGET"]
    with pytest.raises(DeviceError, match="read-only"):
        ModelDevice().write_reg("STATUS", 1)
