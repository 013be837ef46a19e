"""``nms bench link``: throughput of the UART host link (uartbone bridge) of the ULX3S job top, and
the wall-time budget of a digits job on the board derived from it.

Everything is measured on the Verilated board core (:mod:`nms.verif.sim.boardsim`: the real
ULX3S configuration — accelerator, 128 KiB block RAM, UART, bridge — with a bit-level UART line):

* **link throughput** at three line rates (the board top's own, ``BOARD_CONFIGS[BOARD].baud``
  with the divisor it is built with, and 1 / 2 Mbaud): simulated cycles from the first bit of a
  transfer to the last bit of its last byte, converted to seconds at the board clock. The clock
  is the board configuration's ``clock_hz`` (the PLL output) and every divisor is
  ``divisor_for(clock_hz, baud)`` of it, so the report follows the board configuration. Writes
  are sent as the host sends them (8-word frames, LiteX's split, one burst) and as 255-word
  frames; reads one 255-word frame at a time (the host waits for each reply); a register read is
  one round trip.
  Payload bytes/s are compared with the line's ``clock / divisor / 10`` bytes/s (8N1).
* **a digits job** through the serial transport over TCP (``BoardServer``): every byte the host
  sent and received, the frames, the accelerator's own cycle counters, the coreset equal to the
  bit-exact model; the job's time on the board is then ``line bytes / link rate + compute cycles
  / clock`` at each line rate, plus a stated host turnaround per read (USB serial latency, which
  no simulation can measure).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from nms.fpga.board_top import BOARD_CONFIGS, core_params
from nms.rtl.board import CSR_BASE
from nms.rtl.uart import divisor_for
from nms.sw.transport_serial import WRITE_FRAME_WORDS, SerialTransport, encode_read, encode_write
from nms.verif.sim.boardsim import BoardServer, BoardSim

BOARD = "ulx3s-85f"
#: line rates measured (baud); the first is the board top's (its divisor at the board clock is
#: the one the top is built with). 2 Mbaud, not the FTDI's 3 Mbaud maximum: 40 MHz / 3 Mbaud
#: is 13.3, a divisor 2.6 % off; 2 Mbaud (divisor 20) is exact and an FTDI rate (3 MHz / 1.5)
BAUDS = (BOARD_CONFIGS[BOARD].baud, 1_000_000, 2_000_000)
#: divisor of the simulated line during the job (wire byte counts do not depend on it)
JOB_DIVISOR = 16
#: host turnaround per read round trip assumed for the budget (FTDI latency timer set to 1 ms;
#: the default 16 ms is also tabulated)
TURNAROUND_S = (0.001, 0.016)


def _transfer_cycles(sim: BoardSim, data: bytes, reply: int) -> tuple[int, bytes]:
    start = sim.cycle
    sim.feed(data)
    out = b""
    while True:
        n = sim.run(50_000_000)
        out += sim.take()
        if n == 0 or (len(out) >= reply and n < 50_000_000):
            break
    if len(out) != reply:
        raise RuntimeError(f"link bench: expected {reply} reply bytes, got {len(out)}")
    return sim.last_active - start, out


def _measure_rate(sim: BoardSim, baud: int, clock_hz: float, payload_words: int, rng) -> dict:
    divisor = divisor_for(clock_hz=clock_hz, baud=baud)
    sim._lib.board_set_divisor(sim._h, divisor)
    sim.run(100 * divisor)              # let the line settle at the new rate
    words = [int(w) for w in rng.integers(0, 1 << 32, payload_words, dtype=np.uint64)]
    rows = {}
    for name, per_frame in (("write, 8-word frames", WRITE_FRAME_WORDS), ("write, 255-word frames", 255)):
        frames = b"".join(encode_write(0x1000 // 4 + i, words[i:i + per_frame])
                          for i in range(0, len(words), per_frame))
        cycles, _ = _transfer_cycles(sim, frames, 0)
        rows[name] = {"payload_bytes": 4 * len(words), "wire_bytes": len(frames), "cycles": cycles}
    total, got = 0, []
    wire = 0
    for i in range(0, len(words), 255):
        n = min(255, len(words) - i)
        request = encode_read(0x1000 // 4 + i, n)
        cycles, reply = _transfer_cycles(sim, request, 4 * n)
        total += cycles
        wire += len(request) + len(reply)
        got += [int.from_bytes(reply[j:j + 4], "big") for j in range(0, len(reply), 4)]
    if got != words:
        raise RuntimeError("link bench: read back differs from what was written")
    rows["read, 255-word frames (one at a time)"] = {"payload_bytes": 4 * len(words),
                                                     "wire_bytes": wire, "cycles": total}
    cycles, reply = _transfer_cycles(sim, encode_read(CSR_BASE // 4, 1), 4)
    rows["register read (round trip)"] = {"payload_bytes": 4, "wire_bytes": 10, "cycles": cycles}
    for row in rows.values():
        row["seconds"] = row["cycles"] / clock_hz
        row["payload_bytes_per_s"] = row["payload_bytes"] / row["seconds"]
        row["wire_bytes_per_s"] = row["wire_bytes"] / row["seconds"]
    line = clock_hz / divisor / 10                       # bytes/s the line carries, 8N1
    for row in rows.values():
        row["line_utilisation"] = row["wire_bytes_per_s"] / line
    return {"baud": baud, "divisor": divisor, "actual_baud": clock_hz / divisor,
            "line_bytes_per_s": line, "transfers": rows}


def _job(sim: BoardSim, n: int, seed: int) -> dict:
    from sklearn.datasets import load_digits

    from nms.sw.driver import Driver, ModelDevice
    from nms.verif.models import desne

    X, y = load_digits(return_X_y=True)
    X = (X * 16).clip(0, 255).astype(np.uint8)[:n]
    y = y[:n]
    hw = BOARD_CONFIGS[BOARD].hw
    cfg = desne.DesneConfig(k=hw["k"], neg_samples=hw["neg_samples"], capacity=hw["capacity"])
    sim._lib.board_set_divisor(sim._h, JOB_DIVISOR)
    with BoardServer(sim) as server:
        t = SerialTransport(port=server.url, board=BOARD, timeout=600)
        c0 = sim.cycle
        t0 = time.perf_counter()
        got = Driver(t, cfg).select(X, y, 0.1, seed=seed)
        wall = time.perf_counter() - t0
        sent, received = t.bytes_sent, t.bytes_received
        reads, polls = t.read_frames, t.poll_frames
        t.close()
    ref = Driver(ModelDevice.from_hw(hw), cfg).select(X, y, 0.1, seed=seed)   # the board's device
    return {"n": int(n), "dim": int(X.shape[1]), "ratio": 0.1, "seed": seed,
            "equal_to_model": bool(np.array_equal(got["indices"], ref["indices"])),
            "selected": int(got["indices"].size), "chunks": got["counters"]["chunks"],
            "compute_cycles": int(got["counters"]["cycles"]),
            "bytes_sent": int(sent), "bytes_received": int(received),
            "read_frames": int(reads), "poll_frames": int(polls),
            "simulated_cycles": int(sim.cycle - c0), "sim_divisor": JOB_DIVISOR,
            "wall_seconds": wall}


def run(out_dir: Path, quick: bool = False) -> dict:
    cfg = BOARD_CONFIGS[BOARD]
    t0 = time.perf_counter()
    sim = BoardSim(core_params(BOARD), log=print)
    build = dict(sim.build_info)
    rng = np.random.default_rng(12)
    words = 256 if quick else 1024
    rates = [_measure_rate(sim, baud, cfg.clock_hz, words if baud != BAUDS[0] else words // 2, rng)
             for baud in BAUDS]
    if rates[0]["divisor"] != cfg.divisor:
        raise RuntimeError(f"link bench: divisor {rates[0]['divisor']} is not the board top's "
                           f"{cfg.divisor}")
    job = _job(sim, 300 if quick else 1797, seed=0)
    sim.close()
    # the job's time on the board at each line rate
    budget = []
    for r in rates:
        w = r["transfers"]["write, 8-word frames"]["wire_bytes_per_s"]
        rd = r["transfers"]["read, 255-word frames (one at a time)"]["wire_bytes_per_s"]
        link = job["bytes_sent"] / w + job["bytes_received"] / rd
        compute = job["compute_cycles"] / cfg.clock_hz
        row = {"baud": r["baud"], "link_seconds": link, "compute_seconds": compute}
        # every read waits for its reply: one host turnaround per read frame that is not a STATUS
        # poll, and per chunk one poll that sees the job done (the polls while the accelerator
        # computes overlap the compute time; how many there are depends on the host's pace)
        round_trips = job["read_frames"] - job["poll_frames"] + job["chunks"]
        row["round_trips"] = round_trips
        for lat in TURNAROUND_S:
            row[f"total_seconds_turnaround_{int(lat * 1000)}ms"] = link + compute + round_trips * lat
        budget.append(row)
    result = {"board": BOARD, "clock_hz": cfg.clock_hz, "memory": {"backend": cfg.mem_backend,
                                                                   "bytes": cfg.mem_size},
              "quick": quick, "build": build, "rates": rates, "job": job, "budget": budget,
              "seconds": time.perf_counter() - t0}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "link.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (out_dir / "link.md").write_text(_markdown(result))
    return result


def _markdown(r: dict) -> str:
    clock = r["clock_hz"] / 1e6
    lines = ["# UART host link (uartbone bridge) of the ULX3S job top", "",
             f"Measured on the Verilated board core (`nms.verif.sim.boardsim`, configuration "
             f"`{r['board']}`: {clock:g} MHz, {r['memory']['bytes'] // 1024} KiB "
             f"{r['memory']['backend']}), bit-level 8N1 line; simulated cycles from the first bit "
             f"of a transfer to the last, at {clock:g} MHz. Quick run: {r['quick']}.", "",
             "## Link throughput", "",
             "| baud (divisor) | transfer | payload B | wire B | payload B/s | wire B/s | "
             "line use |", "|---|---|---:|---:|---:|---:|---:|"]
    for rate in r["rates"]:
        for name, t in rate["transfers"].items():
            lines.append(f"| {rate['baud']} ({rate['divisor']}) | {name} | {t['payload_bytes']} | "
                         f"{t['wire_bytes']} | {t['payload_bytes_per_s']:,.0f} | "
                         f"{t['wire_bytes_per_s']:,.0f} | {100 * t['line_utilisation']:.1f} % |")
    actual = ", ".join(f"{rate['baud']} -> {rate['actual_baud']:,.0f}" for rate in r["rates"])
    lines += ["", "Divisor = round(clock / baud), so the line runs at clock / divisor baud "
              f"({actual}). `line use` = wire bytes/s over that line's `clock / divisor / 10` "
              "(8N1). 8-word write "
              "frames carry 32 payload bytes in 38 wire bytes (84 %), 255-word frames 1020 in "
              "1026; a read frame costs a 6-byte request and the turnaround before its reply.",
              "", "## A digits job through the serial transport", ""]
    j = r["job"]
    lines += [f"{j['n']} digits ({j['dim']}-D), ratio {j['ratio']}, seed {j['seed']}: "
              f"{j['chunks']} chunks, {j['selected']} selected, equal to the bit-exact model: "
              f"**{j['equal_to_model']}**. Host sent {j['bytes_sent']:,} B, received "
              f"{j['bytes_received']:,} B; the accelerator counted {j['compute_cycles']:,} cycles "
              f"of compute. Simulated with {j['sim_divisor']} cycles per bit "
              f"({j['simulated_cycles']:,} cycles, {j['wall_seconds']:.0f} s of wall time).", "",
              "## Wall-time budget of that job on the board", "",
              "| baud | link (s) | compute (s) | total, 1 ms turnaround (s) | "
              "total, 16 ms turnaround (s) |", "|---|---:|---:|---:|---:|"]
    for b in r["budget"]:
        lines.append(f"| {b['baud']} | {b['link_seconds']:.2f} | {b['compute_seconds']:.3f} | "
                     f"{b['total_seconds_turnaround_1ms']:.2f} | "
                     f"{b['total_seconds_turnaround_16ms']:.2f} |")
    lines += ["", "Link time = bytes sent / measured 8-word-frame write rate + bytes received / "
              "measured read rate; compute = the job's CYCLES counters at the board clock; the "
              "totals add one host turnaround per read round trip (the read frames that are not "
              "STATUS polls, plus one final poll per chunk: "
              f"{r['budget'][0]['round_trips']} round trips) for a USB-serial adapter latency "
              "timer of 1 ms or the FTDI default 16 ms — an assumption: the simulation cannot "
              "measure USB latency. The other STATUS polls overlap the compute time "
              f"({j['poll_frames']} polls in the simulated run, a number set by the host's "
              "pace).", ""]
    return "\n".join(lines)
