"""``nms generate``: write ``<name>.v`` and ``<name>.json`` for one accelerator block.

Blocks live in :data:`REGISTRY` (name -> :class:`Block`: where the component class is, and a
parameter schema with types and defaults). Later stages add themselves with
:func:`register_block`; the FPGA flow picks blocks from the same registry via :func:`elaborate`.

Everything is validated and elaborated before any file is opened, so bad parameters leave no
file behind. Output is deterministic: same block and parameters -> byte-identical files (no
timestamps, no source paths).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nms.rtl.params import BUFFER_BANKS, BUFFER_DIM, CAND_TILE, CAPACITY

__all__ = ["Param", "Block", "REGISTRY", "register_block", "get_block", "resolve_params",
           "elaborate", "generate", "port_table", "add_arguments", "main"]


@dataclass(frozen=True)
class Param:
    """One generator parameter: name, Python type (int, bool, str or float), default, help."""

    name: str
    type: type
    default: Any
    help: str = ""

    def convert(self, value) -> Any:
        """Convert a command-line string or check a JSON value; raise naming the parameter."""
        if isinstance(value, str) and self.type is not str:
            text = value.strip()
            try:
                if self.type is bool:
                    if text.lower() not in ("0", "1", "true", "false"):
                        raise ValueError
                    return text.lower() in ("1", "true")
                return self.type(text)
            except ValueError:
                raise ValueError(f"parameter {self.name}={value!r} is not a valid "
                                 f"{self.type.__name__}") from None
        ok = isinstance(value, self.type) and not (self.type is not bool and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise TypeError(f"parameter {self.name}={value!r} must be a {self.type.__name__}")
        return value


@dataclass(frozen=True)
class Block:
    """A generatable block: ``component`` is ``"module:Class"`` (imported only when used); the
    class takes the parameters as keyword arguments and validates their values itself."""

    name: str
    component: str
    params: tuple[Param, ...]
    description: str = ""
    #: optional ``"module:function"`` giving extra output files: ``f(metadata) -> {name: text}``
    files: str = ""
    param_index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "param_index", {p.name: p for p in self.params})

    def component_class(self):
        module, _, attr = self.component.partition(":")
        return getattr(importlib.import_module(module), attr)


#: block name -> Block. Add new blocks with :func:`register_block`.
REGISTRY: dict[str, Block] = {}


def register_block(block: Block) -> Block:
    if block.name in REGISTRY and REGISTRY[block.name] != block:
        raise ValueError(f"block {block.name!r} is already registered")
    REGISTRY[block.name] = block
    return block


register_block(Block(
    name="distance",
    component="nms.rtl.distance:DistanceEngine",
    description="exact squared L2 distances, T resident queries x L lanes per cycle",
    params=(
        Param("lanes", int, 8, "L, elements per beat (power of two)"),
        Param("tile", int, 4, "T, resident query vectors"),
        Param("elem_width", int, 8, "unsigned element width in bits"),
        Param("max_dim", int, 1024, "largest runtime vector length"),
    ),
))

register_block(Block(
    name="grid",
    component="nms.rtl.grid:GridSampler",
    description="grid sampler: exact-budget exemplar indices over the 2-D embedding",
    params=(
        Param("capacity", int, 1024, "C, most points held on chip"),
    ),
))

register_block(Block(
    name="cover",
    component="nms.rtl.cover:CoverSelector",
    description="coverage selector: reverse kNN lists, gains, greedy kNN-graph cover in cell quotas",
    params=(
        Param("capacity", int, 1024, "C, most points held on chip"),
        Param("k", int, 16, "K, longest kNN row"),
        Param("max_cells", int, 1024, "most grid cells (slots) with a quota"),
    ),
))

register_block(Block(
    name="affinity",
    component="nms.rtl.affinity:AffinityUnit",
    description="per-row precision search to the target entropy and Q1.16 affinities",
    params=(
        Param("k", int, 16, "largest kNN row length"),
        Param("dist_width", int, 26, "squared-distance width in bits"),
        Param("index_width", int, 16, "neighbour index width in bits"),
        Param("lanes", int, 1, "neighbours evaluated per cycle (exp lanes, output dividers)"),
    ),
))

register_block(Block(
    name="knn",
    component="nms.rtl.knn:KnnSelector",
    description="kNN selector: K smallest distances per query of a tile, ties to the lower index",
    params=(
        Param("k", int, 16, "K, neighbours kept per query"),
        Param("tile", int, 4, "T, queries per pass (the distance engine's tile)"),
        Param("dist_width", int, 26, "squared-distance width in bits (engine acc_width)"),
        Param("index_width", int, 16, "candidate index width in bits"),
    ),
))

register_block(Block(
    name="knn_datapath",
    component="nms.rtl.knn:KnnDatapath",
    description="kNN stage: distance engine feeding the kNN selector",
    params=(
        Param("lanes", int, 8, "L, elements per beat (power of two)"),
        Param("tile", int, 4, "T, resident query vectors"),
        Param("elem_width", int, 8, "unsigned element width in bits"),
        Param("max_dim", int, 1024, "largest runtime vector length"),
        Param("k", int, 16, "K, neighbours kept per query"),
        Param("index_width", int, 16, "candidate index width in bits"),
        Param("cand_tile", int, 1, "P, candidates per query-memory row read (beat-interleaved "
              "groups; the device's datapath uses CAND_TILE with its chunk buffer)"),
    ),
))

register_block(Block(
    name="embedding",
    component="nms.rtl.embedding:EmbeddingEngine",
    description="2-D Student-t embedding iterations on chip (kNN attraction, sampled repulsion)",
    params=(
        Param("capacity", int, 1024, "C, most points per job"),
        Param("k", int, 16, "longest neighbour list"),
        Param("neg_samples", int, 8, "negative samples per point and iteration"),
        Param("pair_units", int, 1, "parallel pair units (power of two)"),
        Param("serial_update", bool, False, "update step by shift-adds, no multipliers, one "
              "point every SerialUpdate.interval cycles (for a small device)"),
        Param("serial_pairs", bool, False, "pair units by shift-adds, no multipliers, a pair "
              "every SerialPairUnit.interval cycles per lane (for a small device)"),
    ),
))


#: the chunk datapath's generator parameters, shared by the top that wraps it
DATAPATH_PARAMS = (
        Param("lanes", int, 8, "L, elements per memory / engine / datapath beat (power of two)"),
        Param("tile", int, 4, "T, resident query vectors of the distance engine"),
        Param("elem_width", int, 8, "unsigned element width in bits"),
        Param("max_dim", int, 1024, "largest runtime vector length"),
        Param("k", int, 16, "K, neighbours per point"),
        Param("capacity", int, CAPACITY, "C, most points per chunk (on-chip state; default: the "
              "chosen dataflow's)"),
        Param("neg_samples", int, 8, "negative samples per point and iteration"),
        Param("affinity_lanes", int, 4, "neighbours the affinity unit evaluates per cycle"),
        Param("pair_units", int, 2, "embedding pair units (power of two)"),
        Param("fetch_depth", int, 4, "fetch commands queued ahead of their data"),
        # the chosen dataflow of docs/energy.md §6 (nms.sw.dataflow.CHOSEN) is the default
        Param("buffer_dim", int, BUFFER_DIM, "0: stream the chunk from DDR once per query tile "
              "(no pooling unit); > 0: pooling unit + chunk buffer of "
              "capacity*ceil(buffer_dim/lanes) words, one DDR read per job (default: the chosen "
              "dataflow, 7x7 = 4x4-pooled 28x28 images)"),
        Param("cand_tile", int, CAND_TILE, "P, candidates per query-memory row read (> 1 needs "
              "buffer_dim > 0)"),
        Param("buffer_banks", int, BUFFER_BANKS, "most chunk-buffer banks, split by word address; "
              "a read touches one bank (default: the chosen dataflow, 8 KB banks at C = 1024)"),
        Param("serial_update", bool, False, "embedding update by shift-adds, no multipliers "
              "(for a small device; a longer update phase)"),
        Param("serial_pairs", bool, False, "embedding pair units by shift-adds, no multipliers "
              "(for a small device; a longer pair phase)"),
)


register_block(Block(
    name="datapath",
    component="nms.rtl.datapath:DesneDatapath",
    description="DE-SNE chunk datapath: memory read port -> kNN -> affinity -> embedding -> grid "
                "-> selected indices",
    params=DATAPATH_PARAMS,
))


register_block(Block(
    name="top",
    component="nms.rtl.top:NmsAccelerator",
    description="the accelerator as a device: AXI4 master (m_axi_*), CSR slave from the register "
                "map (s_axil_* or wb_*), irq",
    files="nms.rtl.top:host_files",
    params=DATAPATH_PARAMS + (
        Param("data_width", int, 64, "AXI4 data width: 32, 64 or 128"),
        Param("addr_width", int, 32, "AXI4 address width"),
        Param("max_burst", int, 256, "longest AXI burst in beats (power of two <= 256)"),
        Param("bus", str, "axi-lite", "CSR bus: axi-lite (s_axil_*) or wishbone (wb_*)"),
    ),
))


def get_block(name: str) -> Block:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown block {name!r}; choose from {sorted(REGISTRY)}") from None


def resolve_params(block: Block, overrides: dict | None = None) -> dict:
    """Defaults updated with ``overrides`` (strings or typed values); unknown names rejected."""
    params = {p.name: p.default for p in block.params}
    for key, value in (overrides or {}).items():
        if key not in block.param_index:
            raise ValueError(f"block {block.name!r} has no parameter {key!r}; "
                             f"allowed: {', '.join(block.param_index)}")
        params[key] = block.param_index[key].convert(value)
    return params


def elaborate(block_name: str, overrides: dict | None = None):
    """Construct the block's component; returns ``(block, params, component)``."""
    block = get_block(block_name)
    params = resolve_params(block, overrides)
    return block, params, block.component_class()(**params)


def _layout_fields(shape, prefix="") -> list[dict] | None:
    from amaranth.lib import data

    if not isinstance(shape, data.Layout):
        return None
    out = []
    for key, fld in shape:
        name = f"{prefix}{key}" if not isinstance(key, int) else f"{prefix[:-1]}[{key}]"
        sub = _layout_fields(fld.shape, name + ".")
        if sub is None:
            out.append({"name": name, "offset": fld.offset, "width": fld.width})
        else:
            out += [{**s, "offset": s["offset"] + fld.offset} for s in sub]
    return out


def port_table(component) -> list[dict]:
    """Top-level ports as Verilog sees them: name, direction, width (and packed fields)."""
    from amaranth.hdl import Shape
    from amaranth.lib import wiring

    ports = [{"name": "clk", "direction": "in", "width": 1},
             {"name": "rst", "direction": "in", "width": 1}]
    for path, member, _value in component.signature.flatten(component):
        entry = {"name": "__".join(map(str, path)),
                 "direction": "in" if member.flow == wiring.In else "out",
                 "width": Shape.cast(member.shape).width}
        fields = _layout_fields(member.shape)
        if fields:
            entry["fields"] = fields
        ports.append(entry)
    return ports


def generate(block_name: str, overrides: dict | None = None, *, top: str | None = None):
    """Return ``(verilog_text, metadata)`` for a block; nothing is written."""
    from amaranth.back import verilog

    top = top or get_block(block_name).name
    if not top.isidentifier():
        raise ValueError(f"top module name {top!r} is not a valid identifier")
    block, params, component = elaborate(block_name, overrides)
    # emit_src=False: no absolute source paths in the output (deterministic, machine-neutral).
    text = verilog.convert(component, name=top, emit_src=False)
    metadata = {
        "block": block.name,
        "top": top,
        "description": block.description,
        "parameters": params,
        "derived": dict(getattr(component, "derived", {})),
        "ports": port_table(component),
        "generator": {
            "nms": importlib.metadata.version("nms"),
            "amaranth": importlib.metadata.version("amaranth"),
        },
    }
    return text, metadata


def _parse_kv(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {item!r} is not of the form NAME=VALUE")
        out[key.strip()] = value
    return out


def _read_config(path: Path) -> tuple[str | None, dict]:
    try:
        cfg = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"config {path} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict) or not set(cfg) <= {"block", "params"}:
        raise ValueError(f'config {path} must be a JSON object {{"block": NAME, "params": {{...}}}}')
    params = cfg.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f'config {path}: "params" must be an object of NAME: VALUE')
    return cfg.get("block"), params


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, help="output folder (created if missing)")
    parser.add_argument("--block", help="block name (default: distance, or the config's block)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="set a block parameter (repeatable; overrides --config)")
    parser.add_argument("--config", type=Path, help='JSON file {"block": NAME, "params": {...}}')
    parser.add_argument("--top", help="Verilog module name (default: the block name)")
    parser.add_argument("--list", action="store_true", help="list blocks and their parameters")
    parser.add_argument("--regmap", action="store_true",
                        help="write the register map's host constants (nms_regmap.h, "
                             "nms_regmap.py) and register table (registers.md) into --out")
    parser.add_argument("--regmap-doc", type=Path, metavar="FILE",
                        help="write only the Markdown register table (docs/registers.md)")


def _write_regmap(args) -> int:
    """The renderings of the one job-interface declaration (``nms.rtl.regmap``)."""
    from nms.rtl import regmap

    if args.regmap and args.out is None:
        raise ValueError("--regmap needs --out DIR")
    written = []
    if args.regmap:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in (("nms_regmap.h", regmap.host_constants("c")),
                           ("nms_regmap.py", regmap.host_constants("py")),
                           ("registers.md", regmap.markdown())):
            (args.out / name).write_text(text)
            written.append(args.out / name)
    if args.regmap_doc is not None:
        args.regmap_doc.write_text(regmap.markdown())
        written.append(args.regmap_doc)
    print("wrote " + ", ".join(map(str, written)))
    return 0


def main(args) -> int:
    if args.list:
        for block in REGISTRY.values():
            print(f"{block.name}: {block.description}")
            for p in block.params:
                print(f"  {p.name} ({p.type.__name__}, default {p.default!r}): {p.help}")
        return 0
    if args.regmap_doc is not None or args.regmap:
        return _write_regmap(args)
    if args.out is None:
        raise ValueError("--out DIR is required")
    block_name, overrides = (None, {})
    if args.config is not None:
        block_name, overrides = _read_config(args.config)
    block_name = args.block or block_name or "distance"
    overrides = {**overrides, **_parse_kv(args.param)}
    text, metadata = generate(block_name, overrides, top=args.top)
    # Only now, with everything validated and elaborated, touch the file system.
    args.out.mkdir(parents=True, exist_ok=True)
    vfile = args.out / f"{metadata['top']}.v"
    jfile = args.out / f"{metadata['top']}.json"
    vfile.write_text(text)
    jfile.write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {vfile} and {jfile}")
    block = get_block(metadata["block"])
    if block.files:
        module, _, attr = block.files.partition(":")
        for name, body in getattr(importlib.import_module(module), attr)(metadata).items():
            (args.out / name).write_text(body)
            print(f"wrote {args.out / name}")
    return 0
