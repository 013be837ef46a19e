"""Host driver over the register interface: same selection as the model, refusals that name the
field and value, the sticky error cause, latched parameters, and nothing that hangs."""

import time

import numpy as np
import pytest

from nms.rtl import regmap
from nms.sw.driver import (DeviceBusyError, DeviceError, Driver, JobCounters, JobRefusedError,
                           ModelDevice)
from nms.verif.models import desne

STATUS, CTRL = regmap.REGMAP["STATUS"], regmap.REGMAP["CTRL"]
CAUSE = {name: c.code for name, c in regmap.CAUSE.items()}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.uint8), y


def _status(dev):
    return STATUS.unpack(dev.read_reg("STATUS"))


def test_driver_matches_model_select_with_chunking(digits):
    X, y = digits
    keep = np.isin(y, [0, 1, 2])
    X, y = X[keep], y[keep]
    # the streamed datapath: every class (~180) is split into 2 chunks
    drv = Driver(ModelDevice(capacity=100, buffer_dim=0, cand_tile=1))
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


def test_default_device_plans_chunks_that_fit_the_chunk_buffer(digits):
    """The default device has the chunk buffer (the chosen dataflow): the driver plans chunks of
    at most what it holds, so a default job is never refused (BAD_CHUNK_BUFFER) — here unpooled
    64-D digits (the default pooling of 8x8 images is none) need 8 words each: C = 100 with
    buffer_dim = 49 holds 700 words, 87 vectors; at the default C = 1024, 896. The result equals the model's
    select with that chunk capacity, and every image is read from DDR once."""
    X, y = digits
    keep = np.isin(y, [0, 1, 2])
    X, y = X[keep], y[keep]
    assert Driver(ModelDevice()).chunk_capacity(64, "none") == 896
    assert Driver(ModelDevice()).chunk_capacity(784, "pool4") == 1024
    drv = Driver(ModelDevice(capacity=100))
    drv.config = drv.config.replace(n_iter=60, exaggeration_iters=20, momentum_switch=20)
    got = drv.select(X, y, 0.1, seed=5)
    assert got["pool"] == "none" and got["chunk_capacity"] == 87
    ref = desne.select(X, y, 0.1, drv.config.replace(capacity=87), seed=5)
    assert np.array_equal(got["indices"], ref["indices"])
    assert got["counters"]["chunks"] == sum(-(-int((y == c).sum()) // 87) for c in (0, 1, 2))
    assert got["counters"]["near_bytes_read"] == X.size
    # a job the driver did not plan is refused by the device, naming N and its largest value
    with pytest.raises(JobRefusedError, match="at most 87"):
        drv.run_chunk(100, 64, 5, 0, 1 << 20, 0, counters=JobCounters())


def test_pooling_default_and_override(digits):
    """The default pooling is the data set's (28x28 -> 4x4, 8x8 -> none) where the device has
    the pooling unit, none on the streamed datapath; an explicit pool wins; a bad one is a
    ValueError naming it."""
    dev = Driver(ModelDevice())
    assert dev.resolve_pool(784) == "pool4" and dev.resolve_pool(64) == "none"
    assert dev.resolve_pool(784, "none") == "none" and dev.resolve_pool(784, "pool2") == "pool2"
    assert dev.resolve_pool(45) == "none"
    stream = Driver(ModelDevice(buffer_dim=0, cand_tile=1))
    assert stream.resolve_pool(784) == "none"
    with pytest.raises(ValueError, match="no pooling unit"):
        stream.resolve_pool(784, "pool4")
    with pytest.raises(ValueError, match="pool='pool3'"):
        dev.resolve_pool(784, "pool3")
    with pytest.raises(ValueError, match="square image"):
        dev.resolve_pool(45, "pool2")
    with pytest.raises(ValueError, match="buffer_dim"):
        ModelDevice(max_dim=32)


def test_start_while_busy_is_refused_parameters_are_latched(digits):
    X, y = digits
    dev = ModelDevice(capacity=256, job_delay_s=0.3)  # latency keeps the job visibly busy
    cfg = desne.DesneConfig(capacity=256, n_iter=10, exaggeration_iters=5)
    drv = Driver(dev, cfg)
    cls = X[y == 4]
    dev.write_mem(0, cls.tobytes())
    job = drv.job_values(len(cls), 64, 5, seed=1)
    drv.program(job, 0, 1 << 16)
    drv.start()
    with pytest.raises(DeviceBusyError, match="start while busy"):
        drv.start()
    # at register level a second START while busy is ignored and reported; a parameter write
    # while busy is kept for the next job and does not touch the running one
    dev.write_reg("CTRL", CTRL.pack(start=1))
    assert _status(dev) == {"busy": 1, "done": 0, "error": 1, "cause": CAUSE["START_WHILE_BUSY"]}
    dev.write_reg("BUDGET", 7)
    dev.wait()
    assert _status(dev) == {"busy": 0, "done": 1, "error": 1, "cause": CAUSE["START_WHILE_BUSY"]}
    assert dev.read_reg("RESULT_COUNT") == 5
    out = np.frombuffer(dev.read_mem(1 << 16, 20), "<u4")
    nbr, dist = desne.knn(cls.astype(np.int64), 16)
    aff = desne.affinities(dist, cfg.perplexity)
    Y = desne.embed(nbr, aff["P"], cfg, 1)
    Xc = cls.astype(np.int64)
    assert np.array_equal(out, desne.exemplar_stage(Xc, nbr, aff["P"], Y, 5, cfg))
    # clear_error clears the sticky cause; the next start takes the BUDGET written while busy
    dev.write_reg("CTRL", CTRL.pack(clear_error=1))
    assert _status(dev) == {"busy": 0, "done": 1, "error": 0, "cause": 0}
    dev.write_reg("CTRL", CTRL.pack(start=1))
    dev.wait()
    assert _status(dev) == {"busy": 0, "done": 1, "error": 0, "cause": 0}
    assert dev.read_reg("RESULT_COUNT") == 7
    assert np.array_equal(np.frombuffer(dev.read_mem(1 << 16, 28), "<u4"),
                          desne.exemplar_stage(Xc, nbr, aff["P"], Y, 7, cfg))


def test_refused_job_names_field_and_value(digits):
    X, y = digits
    dev = ModelDevice(capacity=64)
    drv = Driver(dev)
    with pytest.raises(JobRefusedError, match=r"N must be <= capacity \(= 64\), not 100 "
                                              r"\(cause 0x10 BAD_N\)") as info:
        drv.run_chunk(100, 64, 5, 0, 0, 0, counters=JobCounters())
    assert (info.value.cause.name, info.value.field, info.value.value) == ("BAD_N", "N", 100)


def test_exaggeration_shift_5_is_refused_at_once_never_busy(digits):
    """The reported bug: OPT.exaggeration_shift = 5 used to leave STATUS.busy set forever on
    the model backend (the job thread died) and Driver.wait timed out after 600 s."""
    X, y = digits
    dev = ModelDevice(capacity=256, job_delay_s=5.0)   # an accepted job would take >= 5 s
    drv = Driver(dev)
    cls = X[y == 1]
    dev.write_mem(0, cls.tobytes())
    job = {**drv.job_values(len(cls), 64, 5, seed=1), "exaggeration_shift": 5}
    t0 = time.monotonic()
    drv.program(job, 0, 1 << 16)
    dev.write_reg("CTRL", CTRL.pack(start=1))
    assert _status(dev) == {"busy": 0, "done": 1, "error": 1,
                            "cause": CAUSE["BAD_OPT_EXAGGERATION_SHIFT"]}
    with pytest.raises(JobRefusedError, match=r"OPT\.exaggeration_shift must be in \[0, 4\], "
                                              r"not 5"):
        drv.run_job(job, 0, 1 << 16)
    assert time.monotonic() - t0 < 1.0


def test_h_target_outside_q8_16_is_refused(digits):
    X, y = digits
    dev = ModelDevice(capacity=256)
    drv = Driver(dev)
    dev.write_mem(0, X[y == 2].tobytes())
    job = {**drv.job_values(int((y == 2).sum()), 64, 5, seed=1), "h_target": 1 << 24}
    with pytest.raises(JobRefusedError, match=r"H_TARGET must be in \[0, 16777215\], not 16777216"):
        drv.run_job(job, 0, 1 << 16)


def test_memory_outside_the_device_ends_the_job_with_a_bus_error(digits):
    X, y = digits
    dev = ModelDevice(capacity=256, mem_size=1 << 16)
    drv = Driver(dev)
    cls = X[y == 3]
    job = drv.job_values(len(cls), 64, 5, seed=1)
    with pytest.raises(DeviceError, match="AXI_READ_ERROR"):
        drv.run_job(job, (1 << 16) - 64, 0)          # the chunk runs past the end of memory
    dev.write_mem(0, cls.tobytes())
    with pytest.raises(DeviceError, match="AXI_WRITE_ERROR"):
        drv.run_job(job, 0, (1 << 16) - 8)           # 5 indices do not fit before the end
    assert _status(dev)["busy"] == 0
    drv.run_job(job, 0, 1 << 15)                     # and the device still works


def test_wait_times_out_instead_of_hanging(digits):
    X, y = digits
    dev = ModelDevice(capacity=256, job_delay_s=3.0)
    drv = Driver(dev, timeout_s=0.2)
    cls = X[y == 5]
    dev.write_mem(0, cls.tobytes())
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"still busy after 0.2 s"):
        drv.run_job(drv.job_values(len(cls), 64, 5, seed=1), 0, 1 << 16)
    assert time.monotonic() - t0 < 1.5
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        Driver(dev, timeout_s=0)


def test_config_and_parameters_must_match_the_declaration():
    with pytest.raises(ValueError, match="capacity"):
        Driver(ModelDevice(capacity=64), desne.DesneConfig(capacity=128))
    with pytest.raises(ValueError, match=r"ModelDevice.capacity must be in \[4, 65536\], not 2"):
        ModelDevice(capacity=2)
    with pytest.raises(ValueError, match=r"ModelDevice.k must be < capacity \(= 16\), not 16"):
        ModelDevice(capacity=16, k=16)
    with pytest.raises(TypeError, match="ModelDevice.tile must be an integer"):
        ModelDevice(tile=2.0)
    with pytest.raises(ValueError, match=r"ModelDevice.lanes must be a power of two .*not 6"):
        ModelDevice(lanes=6)
    with pytest.raises(ValueError, match="ModelDevice.data_width must be 32, 64 or 128, not 48"):
        ModelDevice(data_width=48)
    with pytest.raises(DeviceError, match="no register 'NOPE'"):
        ModelDevice().read_reg("NOPE")
    with pytest.raises(DeviceError, match="read-only"):
        ModelDevice().write_reg("STATUS", 1)
    with pytest.raises(ValueError, match="not a 32-bit unsigned integer"):
        ModelDevice().write_reg("N", 1 << 32)


def test_model_abort_and_interrupt_follow_the_device_rules(digits):
    """CTRL.abort while busy: ABORTED, IRQ_STATUS.error, no result written; while idle it is
    ignored; the next job runs clean (IRQ_STATUS.done, irq = IRQ_STATUS & IRQ_ENABLE)."""
    X, y = digits
    dev = ModelDevice(capacity=256, job_delay_s=5.0)
    drv = Driver(dev, desne.DesneConfig(capacity=256, n_iter=10, exaggeration_iters=5))
    cls = X[y == 2]
    dev.write_mem(0, cls.tobytes())
    guard = bytes(range(256))
    dev.write_mem(1 << 16, guard)
    job = drv.job_values(len(cls), 64, 5, seed=1)
    status, irq_st, ctrl = (regmap.REGMAP[n] for n in ("STATUS", "IRQ_STATUS", "CTRL"))
    dev.write_reg("CTRL", ctrl.pack(abort=1))               # idle: nothing happens
    assert status.unpack(dev.read_reg("STATUS"))["error"] == 0
    dev.write_reg("IRQ_ENABLE", regmap.REGMAP["IRQ_ENABLE"].pack(error=1))
    drv.program(job, 0, 1 << 16)
    drv.start()
    t0 = time.monotonic()
    dev.write_reg("CTRL", ctrl.pack(abort=1))
    dev.wait()
    assert time.monotonic() - t0 < 2.0                     # cut short, not the 5 s delay
    assert status.unpack(dev.read_reg("STATUS")) == {
        "busy": 0, "done": 1, "error": 1, "cause": regmap.CAUSE["ABORTED"].code}
    assert irq_st.unpack(dev.read_reg("IRQ_STATUS")) == {"done": 0, "error": 1} and dev.irq
    assert dev.read_mem(1 << 16, len(guard)) == guard and dev.read_reg("RESULT_COUNT") == 0
    with pytest.raises(DeviceError, match="ABORTED"):
        drv.check_status(job)
    dev.write_reg("IRQ_STATUS", 0b11)
    assert not dev.irq
    dev.job_delay_s = 0.0
    drv.run_job(job, 0, 1 << 16)
    assert irq_st.unpack(dev.read_reg("IRQ_STATUS")) == {"done": 1, "error": 0}
    assert not dev.irq                                     # done is not enabled
    want = desne.run_chunk(cls.astype(np.int64), 5, drv.config, 1)["selected"]
    assert np.frombuffer(dev.read_mem(1 << 16, 20), "<u4").tolist() == want.tolist()
