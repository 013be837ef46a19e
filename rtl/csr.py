"""The accelerator's CSR slave, built from the one register-map declaration (``nms.rtl.regmap``).

Every register of ``regmap.REGISTERS`` becomes an amaranth-soc ``csr.Register`` at its derived
address, one ``csr.Field`` per declared field, the field action chosen by the register's access:

=========  ===============================  ==============================================
access     amaranth-soc action              the device side (:meth:`CsrBlock.field`)
=========  ===============================  ==============================================
``rw``     ``csr.action.RW``                ``.data``: the stored value
``r``      ``csr.action.R``                 ``.r_data``: driven by the device
``w1s``    ``csr.action.W``                 ``.w_stb & .w_data``: a one-cycle pulse per 1 written
``w1c``    ``csr.action.RW1C``              ``.set`` (device sets), ``.data``; host writes 1 to clear
=========  ===============================  ==============================================

amaranth-soc (``csr.Builder`` -> ``csr.Bridge`` -> ``WishboneCSRBridge``) is not on PyPI; it
comes vendored inside luna-soc (pinned in ``pyproject.toml``), and this is the only module that
imports it, so a move to upstream amaranth-soc is a change of one import line.

Two buses, chosen by the ``bus`` generator parameter: ``"wishbone"`` (classic, 32-bit, word
addresses ``wb_adr = byte address / 4``, 2-cycle access) or ``"axi-lite"`` (an AXI4-Lite slave
bridged onto the same Wishbone bus here: byte addresses, one outstanding access, ``xRESP`` OKAY;
writes with a partial ``WSTRB`` write the whole word — every register is one 32-bit word).
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

# The one import of amaranth-soc in the project (see the module docstring).
from luna_soc.gateware.vendor.amaranth_soc import csr
from luna_soc.gateware.vendor.amaranth_soc.csr.wishbone import WishboneCSRBridge

from nms.rtl import regmap

__all__ = ["BUSES", "CsrBlock", "wishbone_port_signature", "axil_slave_port_signature"]

BUSES = ("wishbone", "axi-lite")

_ACTIONS = {"rw": csr.action.RW, "r": csr.action.R, "w1s": csr.action.W, "w1c": csr.action.RW1C}


def _register_access(actions) -> str:
    readable = any(a is not csr.action.W for a in actions)
    writable = any(a is not csr.action.R for a in actions)
    return ("r" if readable else "") + ("w" if writable else "")


def wishbone_port_signature(addr_width: int) -> wiring.Signature:
    """Wishbone classic slave, 32-bit, word addresses; flat ``wb_*`` names (slave view: In = master drives)."""
    return wiring.Signature({
        "wb_adr": In(addr_width), "wb_dat_w": In(32), "wb_dat_r": Out(32), "wb_sel": In(1),
        "wb_cyc": In(1), "wb_stb": In(1), "wb_we": In(1), "wb_ack": Out(1)})


def axil_slave_port_signature(addr_width: int) -> wiring.Signature:
    """AXI4-Lite slave, 32-bit data, byte addresses; flat ``s_axil_*`` names (slave view)."""
    return wiring.Signature({
        "s_axil_awaddr": In(addr_width), "s_axil_awprot": In(3), "s_axil_awvalid": In(1),
        "s_axil_awready": Out(1),
        "s_axil_wdata": In(32), "s_axil_wstrb": In(4), "s_axil_wvalid": In(1),
        "s_axil_wready": Out(1),
        "s_axil_bresp": Out(2), "s_axil_bvalid": Out(1), "s_axil_bready": In(1),
        "s_axil_araddr": In(addr_width), "s_axil_arprot": In(3), "s_axil_arvalid": In(1),
        "s_axil_arready": Out(1),
        "s_axil_rdata": Out(32), "s_axil_rresp": Out(2), "s_axil_rvalid": Out(1),
        "s_axil_rready": In(1)})


class CsrBlock(wiring.Component):
    """The register file of ``registers`` (default ``regmap.REGISTERS``) behind a Wishbone or
    AXI4-Lite slave port.

    Parameters
    ----------
    bus : str
        ``"wishbone"`` or ``"axi-lite"``.
    registers : tuple of regmap.Register
        The declaration; addresses are ``4 * position`` (as ``regmap.ADDR``).

    Attributes
    ----------
    wb_* or s_axil_* : the slave port (flat, conventional names).
    addr_width : int
        Byte-address bits of the map (``s_axil_*addr``); ``wb_adr`` has ``addr_width - 2``.

    Raises
    ------
    ValueError
        Unknown bus, or a register access mode with no field action.
    """

    def __init__(self, *, bus: str = "axi-lite", registers=None):
        if bus not in BUSES:
            raise ValueError(f"bus={bus!r} is not one of {', '.join(BUSES)}")
        self.bus = bus
        self.declaration = tuple(regmap.REGISTERS if registers is None else registers)
        self.word_bits = max(1, ceil_log2(len(self.declaration)))
        self.addr_width = self.word_bits + 2
        builder = csr.Builder(addr_width=self.word_bits, data_width=32, granularity=8)
        self.registers = {}
        for pos, reg in enumerate(self.declaration):
            action = _ACTIONS.get(reg.access)
            if action is None:
                raise ValueError(f"register {reg.name}: access {reg.access!r} has no CSR field "
                                 f"action; known: {', '.join(_ACTIONS)}")
            # amaranth-soc packs fields back to back: the declaration's gaps become reserved
            # fields that read as 0 and ignore writes, so every field sits at its declared lsb
            fields, at = {}, 0
            for name, (lsb, width) in reg.offsets().items():
                if lsb > at:
                    fields[f"reserved_{at}"] = csr.Field(csr.action.ResR0W0, lsb - at)
                fields[name] = csr.Field(action, width)
                at = lsb + width
            creg = csr.Register(fields, access=_register_access([action]))
            self.registers[reg.name] = builder.add(reg.name, creg, offset=4 * pos)
        self._bridge = csr.Bridge(builder.as_memory_map())
        self._wb = WishboneCSRBridge(self._bridge.bus, data_width=32)
        port = (wishbone_port_signature(self.word_bits) if bus == "wishbone"
                else axil_slave_port_signature(self.addr_width))
        super().__init__(port)

    def field(self, register: str, name: str | None = None):
        """The field action of ``register.name`` (its device-side signals: see the module doc);
        ``name=None`` for a register of one field."""
        decl = {r.name: r for r in self.declaration}.get(register)
        if decl is None:
            raise ValueError(f"no register {register} in the register map")
        if name is None:
            if len(decl.fields) != 1:
                raise ValueError(f"register {register} has fields {[f.name for f in decl.fields]}; "
                                 "name one")
            name = decl.fields[0].name
        if name not in {f.name for f in decl.fields}:
            raise ValueError(f"no field {register}.{name} in the register map")
        return self.registers[register].f[name]

    def has(self, register: str, name: str | None = None) -> bool:
        """True if the map declares ``register`` (and its field ``name``)."""
        decl = {r.name: r for r in self.declaration}.get(register)
        return decl is not None and (name is None or name in {f.name for f in decl.fields})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = self._bridge
        m.submodules.wishbone = wbb = self._wb
        wb = wbb.wb_bus
        if self.bus == "wishbone":
            m.d.comb += [wb.adr.eq(self.wb_adr), wb.dat_w.eq(self.wb_dat_w), wb.sel.eq(self.wb_sel),
                         wb.cyc.eq(self.wb_cyc), wb.stb.eq(self.wb_stb), wb.we.eq(self.wb_we),
                         self.wb_dat_r.eq(wb.dat_r), self.wb_ack.eq(wb.ack)]
            return m
        # ---- AXI4-Lite -> Wishbone: one access at a time; writes take priority ------------------
        adr = Signal(self.word_bits)
        dat = Signal(32)
        m.d.comb += [wb.adr.eq(adr), wb.dat_w.eq(dat), wb.sel.eq(1),
                     self.s_axil_bresp.eq(0), self.s_axil_rresp.eq(0)]
        with m.FSM(name="axil"):
            with m.State("IDLE"):
                with m.If(self.s_axil_awvalid & self.s_axil_wvalid):
                    m.d.comb += [self.s_axil_awready.eq(1), self.s_axil_wready.eq(1)]
                    m.d.sync += [adr.eq(self.s_axil_awaddr[2:]), dat.eq(self.s_axil_wdata)]
                    m.next = "WRITE"
                with m.Elif(self.s_axil_arvalid):
                    m.d.comb += self.s_axil_arready.eq(1)
                    m.d.sync += adr.eq(self.s_axil_araddr[2:])
                    m.next = "READ"
            with m.State("WRITE"):
                m.d.comb += [wb.cyc.eq(1), wb.stb.eq(1), wb.we.eq(1)]
                with m.If(wb.ack):
                    m.d.sync += self.s_axil_bvalid.eq(1)
                    m.next = "BRESP"
            with m.State("BRESP"):
                with m.If(self.s_axil_bready):
                    m.d.sync += self.s_axil_bvalid.eq(0)
                    m.next = "IDLE"
            with m.State("READ"):
                m.d.comb += [wb.cyc.eq(1), wb.stb.eq(1), wb.we.eq(0)]
                with m.If(wb.ack):
                    m.d.sync += [self.s_axil_rvalid.eq(1), self.s_axil_rdata.eq(wb.dat_r)]
                    m.next = "RRESP"
            with m.State("RRESP"):
                with m.If(self.s_axil_rready):
                    m.d.sync += self.s_axil_rvalid.eq(0)
                    m.next = "IDLE"
        return m
