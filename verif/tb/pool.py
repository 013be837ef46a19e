"""cocotb testbench of :class:`nms.rtl.pool.PoolUnit` (run it with
``nms.verif.sim.run_cocotb``; parameters come from :func:`nms.verif.sim.tb_params`).

Jobs run back to back on one instance. Per job the testbench sets ``dim``/``img_w``/``pool``
(held while the job's vectors flow), pulses ``clear``, drives the raw vector beats with random
idle cycles (junk in the unused lanes of each vector's final beat) and takes the output with
random back-pressure. Every output beat is compared with the beats of
:func:`nms.verif.models.pool.pool_vectors` (zero tail lanes), or with the input beats themselves
for ``pool = 0``; nothing may come out beyond them, and the stream rules are checked.

Parameters (JSON): ``unit`` (PoolUnit keyword parameters), ``jobs`` (list of ``{"X": rows,
"pool": code, "img_w": side}``), ``idle``, ``backpressure``, ``seed``.
"""

from __future__ import annotations

import random
import warnings

import cocotb
import numpy as np

from nms.rtl.pool import PoolUnit
from nms.verif.models.pool import pool_vectors
from nms.verif.sim.build import tb_params
from nms.verif.sim.streams import CycleLoop, StreamDriver, StreamMonitor, start_clock

from amaranth.hdl import UnusedElaboratable

# The component is built here only to read its layouts (never elaborated in this process).
warnings.filterwarnings("ignore", category=UnusedElaboratable)


def vector_beats(X, lanes: int, fill=None) -> list[dict]:
    """Beats of the rows of ``X`` in the memory port's order; unused tail lanes from ``fill``
    (an iterator) or zero."""
    out = []
    for row in np.asarray(X):
        nb = -(-len(row) // lanes)
        tail = [next(fill) if fill is not None else 0 for _ in range(nb * lanes - len(row))]
        elems = [int(v) for v in row] + tail
        out += [{"data": elems[b * lanes:(b + 1) * lanes]} for b in range(nb)]
    return out


@cocotb.test()
async def pool_jobs(dut):
    """Every job's output beats equal the model's pooled vectors, under stalls both ways."""
    p = tb_params()
    unit = PoolUnit(**p.get("unit", {}))
    rng = random.Random(p.get("seed", 1))

    def junk():
        while True:
            yield rng.randrange(1 << unit.elem_width)

    await start_clock(dut)
    loop = CycleLoop(dut.clk)
    drv = StreamDriver(dut, "inp", loop=loop, layout=unit.beat_layout, idle=p.get("idle", 0.0),
                       seed=rng.randrange(1 << 30))
    out = StreamMonitor(dut, "out", loop=loop, layout=unit.beat_layout, sink=True,
                        backpressure=p.get("backpressure", 0.0), seed=rng.randrange(1 << 30))
    dut.clear.value = 0
    loop.start()
    failures = []
    for jn, job in enumerate(p["jobs"]):
        X = np.asarray(job["X"], dtype=np.int64)
        pool, img_w = int(job["pool"]), int(job.get("img_w", 0))
        dut.dim.value, dut.img_w.value, dut.pool.value = X.shape[1], img_w, pool
        dut.clear.value = 1
        await loop.wait_until(lambda: True, timeout_cycles=1)
        await loop.wait_until(lambda: True, timeout_cycles=1)
        dut.clear.value = 0
        sent = vector_beats(X, unit.lanes, junk())
        want = sent if pool == 0 else vector_beats(pool_vectors(X, pool, img_w), unit.lanes)
        out.beats.clear()
        drv.extend(sent)
        bound = 40 * len(sent) * unit.lanes + 200
        await drv.wait_done(timeout_cycles=bound)
        await out.wait_count(len(want), timeout_cycles=bound)
        t = loop.cycle
        await loop.wait_until(lambda: loop.cycle >= t + 20, timeout_cycles=40)   # nothing more
        got = out.beats[:]
        if got != want:
            bad = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            failures.append(f"job {jn} (dim={X.shape[1]}, pool={pool}, img_w={img_w}): beat {bad} "
                            f"of {len(want)}: expected {want[bad] if bad < len(want) else None}, "
                            f"got {got[bad] if bad < len(got) else None} ({len(got)} beats)")
        dut._log.info(f"job {jn}: dim={X.shape[1]} pool={pool}: {len(sent)} beats in, "
                      f"{len(got)} out, {'OK' if got == want else 'FAILED'}")
    loop.stop()
    failures += out.protocol_errors[:5]
    assert not failures, "\n".join(failures[:10])
