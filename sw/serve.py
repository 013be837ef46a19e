"""``nms serve --board B --sim --port P``: the simulated board on a TCP port.

The Verilated board core of ``B``'s job top (:mod:`nms.verif.sim.boardsim`: accelerator,
on-board memory, UART and uartbone bridge, bit-level UART line) listens on ``127.0.0.1:P``;
anything that speaks uartbone over pyserial connects to ``socket://127.0.0.1:P``::

    nms serve --board ulx3s-85f --sim --port 5555 &
    nms run --backend fpga --port socket://127.0.0.1:5555 --dataset digits
    litex_server --uart --uart-port socket://127.0.0.1:5555    # LiteX tools, unchanged

The simulated line runs at ``--divisor`` clock cycles per bit (default 16, i.e. 3.1 Mbaud at the
ULX3S top's 50 MHz — the board's own 115200 baud would make a simulated upload take hours); the
link benchmark (``nms bench link``) measures the real line rates.
"""

from __future__ import annotations

import time

from nms.fpga.board_top import BOARD_CONFIGS, core_params
from nms.verif.sim.boardsim import BoardServer, BoardSim

__all__ = ["add_arguments", "main", "SIM_DIVISOR"]

SIM_DIVISOR = 16


def add_arguments(parser) -> None:
    parser.add_argument("--board", required=True, choices=sorted(BOARD_CONFIGS),
                        help="board whose job top is simulated")
    parser.add_argument("--sim", action="store_true", required=True,
                        help="serve the Verilated board (the only mode: a real board has its "
                             "own serial port)")
    parser.add_argument("--port", type=int, default=5555, help="TCP port on 127.0.0.1 (0: any)")
    parser.add_argument("--divisor", type=int, default=SIM_DIVISOR,
                        help=f"simulated clock cycles per UART bit (default {SIM_DIVISOR})")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds (default: until interrupted)")


def main(args) -> int:
    if args.board == "icebreaker":
        raise ValueError("--board icebreaker --sim: the iCEBreaker top's memory is SPRAM "
                         "primitives, which the Verilated board has no model of; simulate "
                         "ulx3s-85f (same core, block RAM)")
    if args.seconds is not None and not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, not {args.seconds}")
    board = BoardSim(core_params(args.board), divisor=args.divisor,
                     log=lambda s: print(s, flush=True))
    with BoardServer(board, port=args.port) as server:
        print(f"[nms serve] simulated {args.board} on {server.url} "
              f"({args.divisor} cycles per bit)", flush=True)
        t0 = time.monotonic()
        try:
            while args.seconds is None or time.monotonic() - t0 < args.seconds:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
    print(f"[nms serve] stopped after {board.cycle} simulated cycles, {server.clients} client(s)",
          flush=True)
    board.close()
    return 0
