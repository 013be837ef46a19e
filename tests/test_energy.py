"""Energy/traffic model: hand-computed values and input validation."""

import math

import numpy as np
import pytest

from nms.sw.energy import (EnergyParams, compare_training, full_training_traffic, link_energy_pj,
                           nms_traffic, nvm_energy_pj)


def test_defaults_and_sources():
    p = EnergyParams()
    # Horowitz ISSCC 2014: 640 pJ per 32-bit DRAM access = 20 pJ/bit; RRAM 10.9 / 1.76 pJ/bit.
    assert p.e_pcb == pytest.approx(640 / 32)
    assert (p.e_nvm_write, p.e_nvm_read, p.weight_bits) == (10.9, 1.76, 8)
    assert "e_near" in EnergyParams.PLACEHOLDERS


def test_full_training_by_hand():
    t = full_training_traffic(n_samples=1000, bytes_per_sample=784, epochs=10)
    assert (t.near_bytes, t.pcb_bytes) == (0, 7_840_000)
    # 7.84e6 B * 8 bit * 20 pJ/bit
    assert t.energy_pj() == pytest.approx(1.2544e9)


def test_nms_by_hand():
    t = nms_traffic(n_samples=1000, bytes_per_sample=784, epochs=10, ratio=0.1)
    # near: 1 pass * 1000 * 784; PCB: 10 epochs * 100 * 784 + 100 indices * 4 B
    assert (t.near_bytes, t.pcb_bytes) == (784_000, 784_400)
    assert t.energy_pj() == pytest.approx(784_000 * 8 * 4.0 + 784_400 * 8 * 20.0)
    two = nms_traffic(n_samples=1000, bytes_per_sample=784, epochs=10, n_selected=100, passes=2)
    assert two.near_bytes == 2 * 784_000 and two.pcb_bytes == t.pcb_bytes
    measured = nms_traffic(n_samples=1000, bytes_per_sample=784, epochs=10, ratio=0.1,
                           near_bytes=np.int64(123))
    assert measured.near_bytes == 123


def test_half_up_budget():
    assert nms_traffic(n_samples=15, bytes_per_sample=1, epochs=1, ratio=0.1,
                       index_bytes=0).pcb_bytes == 2  # 1.5 -> 2


def test_compare_saving():
    r = compare_training(n_samples=1000, bytes_per_sample=784, epochs=10, ratio=0.1)
    e_full = 1.2544e9
    e_nms = 784_000 * 32.0 + 784_400 * 160.0
    assert r["full"]["energy_pj"] == pytest.approx(e_full)
    assert r["nms"]["energy_pj"] == pytest.approx(e_nms)
    assert r["saving_ratio"] == pytest.approx(e_full / e_nms)
    assert r["saving_fraction"] == pytest.approx(1 - e_nms / e_full)
    # With e_near = e_pcb and many epochs the saving tends to 1/ratio minus the extra pass.
    p = EnergyParams(e_near=20.0)
    r2 = compare_training(n_samples=1000, bytes_per_sample=784, epochs=10, ratio=0.1,
                          index_bytes=0, params=p)
    assert r2["saving_ratio"] == pytest.approx(10 * 1000 / (1000 + 10 * 100))


def test_link_and_nvm_energy():
    assert link_energy_pj(near_bytes=1, pcb_bytes=2) == pytest.approx(8 * 4.0 + 16 * 20.0)
    assert nvm_energy_pj(weight_writes=1000) == pytest.approx(1000 * 8 * 10.9)
    assert nvm_energy_pj(weight_writes=0, weight_reads=10**6) == pytest.approx(1e6 * 8 * 1.76)
    p = EnergyParams(weight_bits=4, e_nvm_write=1.0)
    assert nvm_energy_pj(weight_writes=3, params=p) == pytest.approx(12.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=0, bytes_per_sample=1, epochs=1, ratio=0.1), "n_samples"),
    (dict(n_samples=10, bytes_per_sample=1, epochs=0, ratio=0.1), "epochs"),
    (dict(n_samples=10, bytes_per_sample=1, epochs=1, ratio=1.5), "ratio"),
    (dict(n_samples=10, bytes_per_sample=1, epochs=1), "ratio"),
    (dict(n_samples=10, bytes_per_sample=1, epochs=1, n_selected=11), "n_selected"),
    (dict(n_samples=10, bytes_per_sample=1, epochs=1, ratio=0.5, passes=0), "passes"),
    (dict(n_samples=10.5, bytes_per_sample=1, epochs=1, ratio=0.5), "n_samples"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nms_traffic(**kwargs)


def test_bad_params():
    with pytest.raises(ValueError, match="e_pcb"):
        EnergyParams(e_pcb=-1.0)
    with pytest.raises(ValueError, match="e_near"):
        EnergyParams(e_near=math.nan)
    with pytest.raises(ValueError, match="weight_bits"):
        EnergyParams(weight_bits=0)
    with pytest.raises(ValueError, match="weight_writes"):
        nvm_energy_pj(weight_writes=-1)


# ------------------------------------------------------------------------------------------------
# issue 11: the selection's energy, term by term, and the dataflow counts behind it

import json
from pathlib import Path

from nms.sw import dataflow as dfl
from nms.sw.energy import (add_pj, cumulative_energy, mult_pj, parse_energy_params,
                           selection_energy, sram_pj_per_bit, training_comparison)
from nms.verif.models import desne

ROOT = Path(__file__).resolve().parents[1]


def test_primitive_figures_at_their_sources():
    p = EnergyParams()
    # Horowitz 2014: 5 pJ / 32-bit 8 kB read, 20 pJ and 100 pJ / 64-bit for 32 kB and 1 MB
    assert sram_pj_per_bit(100) == sram_pj_per_bit(8192) == pytest.approx(5 / 32)
    assert sram_pj_per_bit(32768) == pytest.approx(20 / 64)
    assert sram_pj_per_bit(1 << 20) == pytest.approx(100 / 64)
    assert sram_pj_per_bit(16384) == pytest.approx((5 / 32 + 20 / 64) / 2)      # log-midpoint
    assert add_pj(8) == pytest.approx(0.03) and add_pj(32) == pytest.approx(0.1)
    assert add_pj(20) == pytest.approx(0.065)
    assert mult_pj(8, 8) == pytest.approx(0.2) and mult_pj(32, 32) == pytest.approx(3.1)
    assert mult_pj(16, 34) == pytest.approx(0.2 + 2.9 * (544 - 64) / 960)
    with pytest.raises(ValueError, match="e_sram_8k <= e_sram_32k"):
        EnergyParams(e_sram_8k=1.0)
    assert p.as_dict()["e_mult32"] == 3.1


def test_selection_energy_by_hand():
    counts = {"ddr": {"read_bytes": 1000, "write_bytes": 8},
              "sram": {"a": {"size_bytes": 1024, "read_bits": 800, "write_bits": 200},
                       "b": {"size_bytes": 1 << 20, "read_bits": 64, "write_bits": 0}},
              "ops": {"distance": {"mult": {"8x8": 10}, "add": {"8": 10, "32": 5}}}}
    e = selection_energy(counts, EnergyParams(sram_write_factor=0.5))
    t = e["terms"]
    assert t["ddr_read"] == pytest.approx(1000 * 8 * 4.0)
    assert t["ddr_write"] == pytest.approx(8 * 8 * 4.0)
    assert t["sram:a"] == pytest.approx((800 + 0.5 * 200) * 5 / 32)
    assert t["sram:b"] == pytest.approx(64 * 100 / 64)
    assert t["ops:distance"] == pytest.approx(10 * 0.2 + 10 * 0.03 + 5 * 0.1)
    assert e["total"] == pytest.approx(sum(t.values()))
    assert e["groups"]["compute"] == pytest.approx(t["ops:distance"])


def test_training_comparison_and_breakeven_by_hand():
    # N=1000, M=100, B=784: one full epoch = 1000*784*8*20 pJ; selection = 2 full epochs
    epoch = 1000 * 784 * 8 * 20.0
    r = training_comparison(n_samples=1000, n_selected=100, bytes_per_sample=784,
                            selection_pj=2 * epoch, epochs=10, index_bytes=0)
    assert r["selection_in_epochs"] == pytest.approx(2.0)
    assert r["full_pj"] == pytest.approx(10 * epoch)
    assert r["nms_pj"] == pytest.approx(2 * epoch + 10 * 0.1 * epoch)
    assert r["saving_fraction"] == pytest.approx(1 - 3 / 10)
    assert r["breakeven_epoch"] == pytest.approx(2 / 0.9)
    c = cumulative_energy(n_samples=1000, n_selected=100, bytes_per_sample=784,
                          selection_pj=2 * epoch, epochs=3, index_bytes=0)
    assert c["epoch"] == [0, 1, 2, 3]
    assert c["full_pj"] == pytest.approx([0, epoch, 2 * epoch, 3 * epoch])
    assert c["nms_pj"] == pytest.approx([2 * epoch + k * 0.1 * epoch for k in range(4)])
    with pytest.raises(ValueError, match="selection_pj"):
        training_comparison(n_samples=10, n_selected=1, bytes_per_sample=1, selection_pj=-1.0,
                            epochs=1)


def test_energy_param_overrides():
    p = parse_energy_params(["e_near=2.5", "e_sram_1m=3", "weight_bits=4"])
    assert (p.e_near, p.e_sram_1m, p.weight_bits) == (2.5, 3.0, 4)
    with pytest.raises(ValueError, match="e_bogus"):
        parse_energy_params(["e_bogus=1"])
    with pytest.raises(ValueError, match="e_near: 'x'"):
        parse_energy_params(["e_near=x"])
    with pytest.raises(ValueError, match="e_pcb"):
        parse_energy_params(["e_pcb=-3"])


# ---- the counts: closed formulas against an independent walk of the dataflow --------------------


def _walk(n, dim, flow):
    """Beat-by-beat enumeration of the distance stage: what each memory delivers."""
    L, T, P = flow.lanes, flow.tile, flow.cand_tile
    d2 = dfl.reduced_dim(dim, flow.reduce)
    ddr = qwrite = qread_rows = buf_read = buf_write = elems = engine_beats = 0
    if flow.buffer:
        for _ in range(n):
            ddr += dim
            buf_write += -(-d2 // L) * L
    for base in range(0, n, T):
        for q in range(T):                       # load the tile (padding queries included)
            if not flow.buffer and base + q < n:
                ddr += dim
            if flow.buffer and base + q < n:
                buf_read += -(-d2 // L) * L
            for _ in range(0, d2, L):
                qwrite += L
                engine_beats += 1
        for c0 in range(0, n, P):                # candidates, P at a time per query row read
            for c in range(c0, min(n, c0 + P)):
                if flow.buffer:
                    buf_read += -(-d2 // L) * L
                else:
                    ddr += dim
                for _ in range(0, d2, L):
                    engine_beats += 1
                    elems += T * L
            qread_rows += -(-d2 // L)
    return {"ddr": ddr, "qwrite_bits": 8 * qwrite, "qread_bits": qread_rows * T * L * 8,
            "buf_read_bits": 8 * buf_read, "buf_write_bits": 8 * buf_write, "elems": elems,
            "engine_beats": engine_beats}


@pytest.mark.parametrize("n, dim, flow", [
    (37, 45, dfl.Dataflow(tile=4, max_dim=64)),
    (64, 64, dfl.Dataflow(tile=4, max_dim=64)),
    (50, 784, dfl.Dataflow(buffer=True, tile=16, cand_tile=4, reduce="pool4")),
    (33, 784, dfl.Dataflow(buffer=True, tile=8, cand_tile=3, reduce="pool2", lanes=4)),
    (21, 64, dfl.Dataflow(buffer=False, tile=5, cand_tile=2, reduce="pool2", max_dim=64)),
])
def test_counts_equal_an_enumeration(n, dim, flow):
    c = dfl.chunk_counts(n=n, dim=dim, budget=3, flow=flow, n_iter=7)
    w = _walk(n, dim, flow)
    assert c["ddr"]["read_bytes"] == c["rtl"]["bytes_read"] == w["ddr"]
    assert c["rtl"]["dist_beats"] == w["engine_beats"]
    assert c["dist_elems"] == w["elems"]
    q = c["sram"]["query_memory"]
    assert (q["write_bits"], q["read_bits"]) == (w["qwrite_bits"], w["qread_bits"])
    if flow.buffer:
        b = c["sram"]["chunk_buffer"]
        assert (b["read_bits"], b["write_bits"]) == (w["buf_read_bits"], w["buf_write_bits"])
        # the RTL's counters of the buffer's words (L bytes each)
        L = flow.lanes
        assert c["rtl"]["buf_read_beats"] * 8 * L == w["buf_read_bits"]
        assert c["rtl"]["buf_write_beats"] * 8 * L == w["buf_write_bits"]
    else:
        assert "chunk_buffer" not in c["sram"]
    assert c["rtl"]["query_rows_read"] * flow.tile * flow.lanes * 8 == w["qread_bits"]
    kk = min(flow.k, n - 1)
    assert c["rtl"]["pair_items"] == 7 * n * (kk + flow.neg_samples)
    assert c["rtl"]["rep_items"] == 7 * n * flow.neg_samples
    assert c["ddr"]["write_bytes"] == c["rtl"]["bytes_written"] == 12


def test_hold_self_only_changes_y_reads():
    a = dfl.chunk_counts(n=100, dim=784, budget=10, flow=dfl.BASELINE, n_iter=5)
    b = dfl.chunk_counts(n=100, dim=784, budget=10, flow=dfl.BASELINE.replace(hold_self=True),
                         n_iter=5)
    pairs = a["pair_items"]
    assert a["sram"]["embed_y"]["read_bits"] - b["sram"]["embed_y"]["read_bits"] == \
        48 * (pairs - 5 * 100)
    # the RTL counter perf.y_reads is the priced Y traffic, in 48-bit words
    for c in (a, b):
        assert c["rtl"]["y_reads"] * 48 == c["sram"]["embed_y"]["read_bits"]
    assert a["rtl"]["y_reads"] - b["rtl"]["y_reads"] == pairs - 5 * 100
    assert a["ops"] == b["ops"]
    assert {k: v for k, v in a["rtl"].items() if k != "y_reads"} == \
        {k: v for k, v in b["rtl"].items() if k != "y_reads"}


def test_dataset_counts_sum_the_driver_chunks():
    y = np.repeat(np.arange(3), [250, 90, 130])
    flow = dfl.Dataflow(capacity=100, k=8, max_dim=64)
    tot = dfl.dataset_counts(y, dim=64, ratio=0.1, flow=flow, n_iter=3)
    plan = [ch for ch in desne.plan_chunks(y, 0.1, 100) if ch.budget > 0]
    assert tot["chunks"] == len(plan)
    assert tot["rtl"]["bytes_read"] == sum(
        dfl.chunk_counts(n=ch.members.size, dim=64, budget=ch.budget, flow=flow,
                         n_iter=3)["rtl"]["bytes_read"] for ch in plan)
    assert tot["rtl"]["bytes_written"] == 4 * sum(ch.budget for ch in plan)


def test_counts_bad_input():
    with pytest.raises(ValueError, match="n must be"):
        dfl.chunk_counts(n=2000, dim=8, budget=1, flow=dfl.BASELINE, n_iter=1)
    with pytest.raises(ValueError, match="budget"):
        dfl.chunk_counts(n=20, dim=8, budget=21, flow=dfl.BASELINE, n_iter=1)
    with pytest.raises(ValueError, match="reduce='pool4' needs a square image"):
        dfl.Dataflow(reduce="pool4", max_dim=100)
    with pytest.raises(ValueError, match="Dataflow.tile"):
        dfl.Dataflow(tile=0)
    with pytest.raises(ValueError, match="Dataflow.reduce"):
        dfl.Dataflow(reduce="pca")
    with pytest.raises(ValueError, match="search"):
        dfl.chunk_counts(n=20, dim=8, budget=2, flow=dfl.BASELINE, n_iter=1, search="x")


def test_bram_blocks_and_fit():
    assert dfl.bram_blocks(1024, 18) == 1 and dfl.bram_blocks(512, 36) == 1
    assert dfl.bram_blocks(2048, 36) == 4 and dfl.bram_blocks(16384, 1) == 1
    assert dfl.bram_blocks(16384, 27) == 24          # the K·C list memory: 3 wide x 8 deep of 2K x 9
    # a raw 784-D chunk buffer of C = 1024 alone needs ~800 KB: it cannot fit
    assert not dfl.memory_plan(dfl.Dataflow(buffer=True))["fits"]
    assert dfl.memory_plan(dfl.BASELINE)["fits"] and dfl.memory_plan(dfl.CHOSEN)["fits"]
    assert dfl.memory_plan(dfl.CHOSEN)["chunk_buffer_bytes"] == dfl.CHOSEN.capacity * 56   # 7 words of 8


# ---- the reduced kNN input in the bit-exact model path ---------------------------------------------


def test_pooling_equals_an_explicit_loop():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, size=(3, 784))
    for name, w in (("pool2", 2), ("pool4", 4)):
        got = dfl.reduce_vectors(X, name)
        side = 28 // w
        for i in range(3):
            img = X[i].reshape(28, 28)
            want = [sum(int(img[r * w + a, c * w + b]) for a in range(w) for b in range(w)) // (w * w)
                    for r in range(side) for c in range(side)]
            assert got[i].tolist() == want
    assert dfl.reduce_vectors(X, "none") is X


def test_run_chunk_flow_default_is_the_model():
    rng = np.random.default_rng(2)
    X = rng.integers(0, 256, size=(40, 784))
    cfg = desne.DesneConfig(n_iter=12, exaggeration_iters=4, momentum_switch=4)
    a, b = desne.run_chunk(X, 5, cfg, 3), dfl.run_chunk_flow(X, 5, cfg, 3)
    for key in ("nbr", "dist", "P", "Y", "selected"):
        assert np.array_equal(a[key], b[key]), key
    p = dfl.run_chunk_flow(X, 5, cfg, 3, reduce="pool2")
    nbr, _ = desne.knn(dfl.reduce_vectors(X, "pool2"), cfg.k)
    assert np.array_equal(p["nbr"], nbr) and not np.array_equal(p["nbr"], a["nbr"])
    y = np.repeat([0, 1], 20)
    s = dfl.select_flow(X, y, 0.2, cfg, seed=4)
    assert np.array_equal(s["indices"], desne.select(X, y, 0.2, cfg, seed=4)["indices"])
    with pytest.raises(ValueError, match="square image"):
        dfl.select_flow(X[:, :50], y, 0.2, cfg, reduce="pool2")


# ---- the formulas against what the hardware and the model backend count ----------------------------


def test_model_backend_counters_equal_the_formula():
    """The driver's counters on the model device (BYTES_READ / BYTES_WRITTEN registers) equal
    the baseline dataflow's closed formula summed over the driver's chunks."""
    from nms.sw.driver import Driver, ModelDevice

    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, size=(150, 64)).astype(np.uint8)
    y = np.repeat([0, 1], 75)
    cfg = desne.DesneConfig(k=8, neg_samples=4, capacity=64, perplexity=5.0, n_iter=6,
                            exaggeration_iters=2, momentum_switch=2)
    drv = Driver(ModelDevice(capacity=64, max_dim=64, k=8, neg_samples=4, tile=4, buffer_dim=0,
                             cand_tile=1), cfg)   # the streamed datapath
    got = drv.select(X, y, 0.1, seed=1)["counters"]
    # the generated embedding holds Y[i] (hold_self), so the report prices that front end
    flow = dfl.Dataflow(capacity=64, k=8, neg_samples=4, tile=4, max_dim=64, hold_self=True)
    want = dfl.dataset_counts(y, dim=64, ratio=0.1, flow=flow, n_iter=6)
    assert got["near_bytes_read"] == want["rtl"]["bytes_read"]
    assert got["near_bytes_written"] == want["rtl"]["bytes_written"]
    # the report nms run writes: built from the formula, checked against the counters
    from nms.sw.energy import selection_markdown, selection_report

    dev = drv.t
    rep = selection_report(y, dim=64, ratio=0.1, config=cfg, hardware=dev, epochs=10,
                           measured_near_bytes=got["near_bytes_read"])
    assert rep["ddr_read_bytes"] == got["near_bytes_read"]
    assert rep["energy"]["total"] == pytest.approx(selection_energy(want)["total"])
    assert rep["flow"]["capacity"] == 64 and rep["flow"]["k"] == 8 and rep["flow"]["hold_self"]
    assert any("break-even" in line for line in selection_markdown(rep))
    with pytest.raises(ValueError, match="differ from the dataflow formula"):
        selection_report(y, dim=64, ratio=0.1, config=cfg, hardware=dev, epochs=10,
                         measured_near_bytes=got["near_bytes_read"] + 1)


def test_model_backend_chunk_buffer_counters_equal_the_formula():
    """The model device with the chunk buffer and a 2x2-pooled selection: its counters equal
    the buffered flow's formula summed over the driver's chunks (each image read once), and the
    energy report built from that flow agrees with them."""
    from nms.sw.driver import Driver, ModelDevice
    from nms.sw.energy import selection_report

    rng = np.random.default_rng(13)
    X = rng.integers(0, 256, size=(150, 64)).astype(np.uint8)
    y = np.repeat([0, 1], 75)
    cfg = desne.DesneConfig(k=8, neg_samples=4, capacity=64, perplexity=5.0, n_iter=6,
                            exaggeration_iters=2, momentum_switch=2, pool="pool2")
    dev = ModelDevice(capacity=64, max_dim=64, k=8, neg_samples=4, tile=4, buffer_dim=16)
    got = Driver(dev, cfg).select(X, y, 0.1, seed=1)["counters"]
    # the device as generated: P = dev.cand_tile candidates per query row, Y[i] held
    flow = dfl.Dataflow(buffer=True, reduce="pool2", capacity=64, k=8, neg_samples=4, tile=4,
                        max_dim=64, cand_tile=dev.cand_tile, hold_self=True,
                        buffer_banks=dev.buffer_banks)
    want = dfl.dataset_counts(y, dim=64, ratio=0.1, flow=flow, n_iter=6)
    assert got["near_bytes_read"] == want["rtl"]["bytes_read"] == 150 * 64
    rep = selection_report(y, dim=64, ratio=0.1, config=cfg, hardware=dev, epochs=10,
                           measured_near_bytes=got["near_bytes_read"])
    assert rep["flow"]["buffer"] and rep["flow"]["reduce"] == "pool2"
    assert rep["flow"]["cand_tile"] == dev.cand_tile == 4 and rep["flow"]["hold_self"]
    assert rep["flow"]["buffer_banks"] == dev.buffer_banks == 8
    assert rep["energy"]["total"] == pytest.approx(selection_energy(want)["total"])


def test_recorded_datapath_counters_equal_the_formula():
    """``nms bench datapath``'s recorded Verilated run (bench/results/datapath.json, stage job)."""
    rec = json.loads((ROOT / "bench/results/datapath.json").read_text())
    hw = rec["params"]
    flow = dfl.Dataflow(lanes=hw["lanes"], tile=hw["tile"], k=hw["k"], capacity=hw["capacity"],
                        neg_samples=hw["neg_samples"], pair_units=hw["pair_units"],
                        max_dim=hw["max_dim"])
    assert rec["stages"]
    for st in rec["stages"]:
        c = dfl.chunk_counts(n=st["n"], dim=st["dim"], budget=st["budget"], flow=flow,
                             n_iter=st["n_iter"])
        assert c["rtl"]["bytes_read"] == st["measured"]["bytes_read"]
        assert c["rtl"]["mem_beats"] == st["measured"]["mem_beats"]


def test_verilated_datapath_counters_equal_the_formula(tmp_path):
    """Two jobs on the Verilated datapath (the build of tests/test_datapath.py): every ``perf``
    counter the RTL has for traffic and work equals :func:`nms.sw.dataflow.chunk_counts`."""
    from amaranth.back import verilog

    from nms.rtl.datapath import DesneDatapath
    from nms.verif.sim.build import run_cocotb

    hw = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 8, "capacity": 128,
          "neg_samples": 4, "affinity_lanes": 4, "pair_units": 2}
    rng = np.random.default_rng(5)
    sched = {"exaggeration_iters": 3, "momentum_switch": 3, "perplexity": 5.0}
    jobs = [{"X": rng.integers(0, 256, size=(37, 45)).tolist(), "budget": 6, "seed": 3,
             "cfg": {**sched, "n_iter": 9}},
            {"X": rng.integers(0, 256, size=(9, 64)).tolist(), "budget": 4, "seed": 4,
             "cfg": {**sched, "n_iter": 5}}]
    report = tmp_path / "perf.json"
    v = verilog.convert(DesneDatapath(**hw), name="top", emit_src=False)
    run_cocotb("datapath_c128", v, "nms.verif.tb.datapath",
               {"datapath": hw, "jobs": jobs, "mem": {"req_stall": 0.2, "latency": [1, 9],
                                                      "gap": 0.2},
                "backpressure": 0.2, "seed": 2, "report": str(report), "check_stages": False})
    flow = dfl.Dataflow(lanes=8, tile=4, k=8, capacity=128, neg_samples=4, pair_units=2,
                        max_dim=64, hold_self=True)
    rec = json.loads(report.read_text())
    assert len(rec) == 2
    for r, job in zip(rec, jobs):
        c = dfl.chunk_counts(n=r["n"], dim=r["dim"], budget=job["budget"], flow=flow,
                             n_iter=job["cfg"]["n_iter"])
        for key in ("bytes_read", "mem_beats", "dist_beats", "pair_items", "rep_items",
                    "y_reads"):
            assert r["perf"][key] == c["rtl"][key], key


def test_verilated_chunk_buffer_counters_equal_the_formula(tmp_path):
    """The chosen dataflow in the RTL (``buffer_dim > 0``: one DDR read per job, pooling unit,
    chunk buffer; the build of tests/test_datapath.py): three jobs — 2x2 and 4x4 pooled and
    unpooled — under random stalls and back-pressure; every traffic and work counter of
    ``perf`` (``bytes_read``, ``mem_beats``, ``dist_beats``, ``buf_read_beats``,
    ``buf_write_beats``, ``query_rows_read``, ``pair_items``, ``rep_items``, ``y_reads``)
    equals :func:`nms.sw.dataflow.chunk_counts` of the buffered flow with ``hold_self``, and
    the priced memory traffic is the counted words times the word width: the chunk buffer's
    read / write bits, and the embedding's Y reads (48-bit words; ``hold_self``: each point's
    own ``Y[i]`` once per iteration, not once per pair)."""
    from amaranth.back import verilog

    from nms.rtl.datapath import DesneDatapath
    from nms.verif.sim.build import run_cocotb

    hw = {"lanes": 8, "tile": 4, "elem_width": 8, "max_dim": 64, "k": 8, "capacity": 128,
          "neg_samples": 4, "affinity_lanes": 4, "pair_units": 2, "buffer_dim": 16,
          "cand_tile": 4, "buffer_banks": 8}
    rng = np.random.default_rng(6)
    sched = {"exaggeration_iters": 3, "momentum_switch": 3, "perplexity": 5.0}
    jobs = [{"X": rng.integers(0, 256, size=(37, 64)).tolist(), "budget": 6, "seed": 3,
             "cfg": {**sched, "n_iter": 9, "pool": "pool2"}},
            {"X": rng.integers(0, 256, size=(21, 64)).tolist(), "budget": 3, "seed": 5,
             "cfg": {**sched, "n_iter": 4, "pool": "pool4"}},
            {"X": rng.integers(0, 256, size=(9, 45)).tolist(), "budget": 4, "seed": 4,
             "cfg": {**sched, "n_iter": 5}}]
    report = tmp_path / "perf.json"
    v = verilog.convert(DesneDatapath(**hw), name="top", emit_src=False)
    run_cocotb("datapath_c128_buf16_p4", v, "nms.verif.tb.datapath",
               {"datapath": hw, "jobs": jobs, "mem": {"req_stall": 0.2, "latency": [1, 9],
                                                      "gap": 0.2},
                "backpressure": 0.2, "seed": 2, "report": str(report), "check_stages": False})
    rec = json.loads(report.read_text())
    assert len(rec) == 3
    keys = ("bytes_read", "mem_beats", "dist_beats", "buf_read_beats", "buf_write_beats",
            "query_rows_read", "pair_items", "rep_items", "y_reads")
    for r, job in zip(rec, jobs):
        flow = dfl.Dataflow(buffer=True, lanes=8, tile=4, cand_tile=4, k=8, capacity=128,
                            neg_samples=4, pair_units=2, max_dim=64, hold_self=True,
                            reduce=job["cfg"].get("pool", "none"))
        c = dfl.chunk_counts(n=r["n"], dim=r["dim"], budget=job["budget"], flow=flow,
                             n_iter=job["cfg"]["n_iter"])
        for key in keys:
            assert r["perf"][key] == c["rtl"][key], key
        buf = c["sram"]["chunk_buffer"]
        assert buf["read_bits"] == 64 * r["perf"]["buf_read_beats"]
        assert buf["write_bits"] == 64 * r["perf"]["buf_write_beats"]
        assert c["sram"]["embed_y"]["read_bits"] == 48 * r["perf"]["y_reads"]
        n, kk = r["n"], min(8, r["n"] - 1)
        # pairs + own point once per point and iteration + update + output (not 2 x pairs)
        assert r["perf"]["y_reads"] == (r["perf"]["pair_items"] + 2 * job["cfg"]["n_iter"] * n
                                        + n)
        assert r["perf"]["pair_items"] == job["cfg"]["n_iter"] * n * (kk + 4)
        assert r["perf"]["bytes_read"] == r["n"] * r["dim"]          # each image read once


def test_chosen_default_is_the_recorded_choice():
    """nms.sw.dataflow.CHOSEN / CHOSEN_SCHEDULE are the row the sweep chose
    (bench/results/dataflow.json)."""
    rec = json.loads((ROOT / "bench/results/dataflow.json").read_text())
    chosen = rec["chosen"]
    assert chosen is not None
    flow = dict(chosen["flow"])
    assert dfl.CHOSEN.replace(max_dim=flow["max_dim"]).as_dict() == flow
    c, reduce, n_iter, neg = next(a["point"] for k, a in rec["accuracy"].items()
                                  if k == chosen["point"])
    # the sweep's point (n_iter, neg_samples), with the schedule it measured (bench/dataflow.py
    # _config: exaggeration and momentum switch at a third); the DE-SNE default is this schedule
    from nms.bench.dataflow import _config
    want = _config(n_iter, neg)
    assert dfl.CHOSEN_SCHEDULE == {k: getattr(want, k) for k in dfl.CHOSEN_SCHEDULE}
    assert set(dfl.CHOSEN_SCHEDULE) == {"n_iter", "neg_samples", "exaggeration_iters",
                                        "momentum_switch"}
    assert desne.DesneConfig() == want
