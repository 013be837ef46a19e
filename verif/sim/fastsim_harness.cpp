// Fast whole-job simulation of the NmsAccelerator top (nms.verif.sim.fastsim): Verilator or CXXRTL
// behind the port adapter of fastsim_dut.h.
//
// The Verilated model, an AXI4 memory model and a CSR master run together in C++; Python
// (ctypes) enters only at transaction boundaries: register access, memory load / read-back,
// "run until irq". Built into a shared library per configuration (cached by content hash).
//
// Compile-time configuration (set by fastsim.py):
//   DATA_WIDTH  32 | 64 | 128   AXI4 data width of the top
//   CSR_AXIL    1 = AXI4-Lite slave (s_axil_*), 0 = Wishbone (wb_*)
//
// Memory model: AR/AW accepted when the request queue has room (optionally stalled at random);
// read data of a burst is offered `latency` cycles after its AR was accepted, beats back to
// back unless `gap` stalls them; a write burst's B is offered `latency` cycles after its last W
// beat. Addresses outside the memory answer SLVERR (reads return zero, writes are dropped).
// Bursts are checked (INCR, no 4 KiB crossing, <= 256 beats); a violation is counted.

#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

#ifndef DATA_WIDTH
#define DATA_WIDTH 64
#endif
#ifndef CSR_AXIL
#define CSR_AXIL 1
#endif

#include "fastsim_dut.h"  // the engine: Verilator or CXXRTL behind one port adapter

static const int BEAT_BYTES = DATA_WIDTH / 8;

namespace {

struct Burst {
    uint64_t addr;
    int beats;
    int beat;
    uint64_t ready_at;
    bool error;
};

struct Rng {  // xorshift64*: a deterministic stall pattern per seed
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 2654435761u + 1) {}
    uint32_t next() {
        s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
        return uint32_t((s * 2685821657736338717ull) >> 32);
    }
    bool chance(uint32_t per65536) { return per65536 && (next() & 0xFFFF) < per65536; }
};

struct Sim {
    Dut dut;
    Dut* top = &dut;  // the port accessors of the engine (fastsim_dut.h)
    std::vector<uint8_t> mem;
    uint64_t cycle = 0;
    uint32_t latency;
    uint32_t stall;  // probability of an AR/AW/W stall or an R gap per cycle, in 1/65536
    Rng rng;
    std::deque<Burst> reads, writes, bresps;
    size_t max_outstanding = 16;
    uint64_t violations = 0, read_beats = 0, write_beats = 0, read_bursts = 0, write_bursts = 0;

    Sim(size_t mem_size, uint32_t latency_, uint32_t stall_, uint64_t seed)
        : mem(mem_size, 0), latency(latency_), stall(stall_), rng(seed) {}
    ~Sim() { dut.final(); }

    // ---- data bus helpers (64-bit or wide) -----------------------------------------------
    void set_rdata(uint64_t addr) {
        uint8_t bytes[BEAT_BYTES];
        for (int i = 0; i < BEAT_BYTES; ++i)
            bytes[i] = addr + i < mem.size() ? mem[addr + i] : 0;
        uint32_t words[BEAT_BYTES / 4];
        std::memcpy(words, bytes, BEAT_BYTES);
        top->set_rdata_words(words);
    }
    void write_beat(uint64_t addr) {
        uint32_t words[BEAT_BYTES / 4];
        top->get_wdata_words(words);
        uint8_t bytes[BEAT_BYTES];
        std::memcpy(bytes, words, BEAT_BYTES);
        uint32_t strb = top->m_axi_wstrb();
        for (int i = 0; i < BEAT_BYTES; ++i)
            if ((strb >> i) & 1 && addr + i < mem.size()) mem[addr + i] = bytes[i];
    }

    void check_burst(uint64_t addr, int beats, int burst_type) {
        uint64_t size = uint64_t(beats) * BEAT_BYTES;
        if (burst_type != 1 || beats > 256 || (addr & 0xFFF) + size > 0x1000 || addr % BEAT_BYTES)
            ++violations;
    }

    // ---- one clock cycle: drive inputs for the coming edge, sample handshakes, clock ------
    // `csr_*` are driven by the CSR master below (held in members between cycles).
    void step() {
        Dut* t = top;
        // memory-side inputs, decided from the model state
        bool ar_ready = reads.size() < max_outstanding && !rng.chance(stall);
        bool aw_ready = writes.size() < max_outstanding && !rng.chance(stall);
        bool w_ready = !writes.empty() && !rng.chance(stall);
        bool r_valid = !reads.empty() && reads.front().ready_at <= cycle && !rng.chance(stall);
        bool b_valid = !bresps.empty() && bresps.front().ready_at <= cycle;
        t->m_axi_arready(ar_ready);
        t->m_axi_awready(aw_ready);
        t->m_axi_wready(w_ready);
        t->m_axi_rvalid(r_valid);
        t->m_axi_bvalid(b_valid);
        t->m_axi_rid(0);
        t->m_axi_bid(0);
        if (r_valid) {
            Burst& b = reads.front();
            uint64_t a = b.addr + uint64_t(b.beat) * BEAT_BYTES;
            set_rdata(a);
            t->m_axi_rresp((b.error || a + BEAT_BYTES > mem.size()) ? 2 : 0);
            t->m_axi_rlast(b.beat == b.beats - 1);
        }
        if (b_valid) t->m_axi_bresp(bresps.front().error ? 2 : 0);
        t->clk(0);
        t->edge();
        // handshakes of the coming edge
        bool ar = ar_ready && t->m_axi_arvalid();
        bool aw = aw_ready && t->m_axi_awvalid();
        bool w = w_ready && t->m_axi_wvalid();
        bool r = r_valid && t->m_axi_rready();
        bool bh = b_valid && t->m_axi_bready();
        Burst nar{}, naw{};
        if (ar) {
            nar = {t->m_axi_araddr(), int(t->m_axi_arlen()) + 1, 0, cycle + 1 + latency, false};
            check_burst(nar.addr, nar.beats, t->m_axi_arburst());
            nar.error = nar.addr + uint64_t(nar.beats) * BEAT_BYTES > mem.size();
            ++read_bursts;
        }
        if (aw) {
            naw = {t->m_axi_awaddr(), int(t->m_axi_awlen()) + 1, 0, 0, false};
            check_burst(naw.addr, naw.beats, t->m_axi_awburst());
            naw.error = naw.addr + uint64_t(naw.beats) * BEAT_BYTES > mem.size();
            ++write_bursts;
        }
        if (w) {
            Burst& b = writes.front();
            write_beat(b.addr + uint64_t(b.beat) * BEAT_BYTES);
            ++write_beats;
            if (bool(t->m_axi_wlast()) != (b.beat == b.beats - 1)) ++violations;
            if (++b.beat == b.beats) {
                b.ready_at = cycle + 1 + latency;
                bresps.push_back(b);
                writes.pop_front();
            }
        }
        if (r) {
            ++read_beats;
            Burst& b = reads.front();
            if (++b.beat == b.beats) reads.pop_front();
        }
        if (bh) bresps.pop_front();
        if (ar) reads.push_back(nar);
        if (aw) writes.push_back(naw);
        csr_drive_sample();
        t->clk(1);
        t->edge();
        ++cycle;
    }

    // ---- CSR master: one access at a time, driven inside step() ----------------------------
    enum { CSR_IDLE, CSR_WRITE, CSR_READ, CSR_DONE } csr_state = CSR_IDLE;
    uint32_t csr_addr = 0, csr_wdata = 0, csr_rdata = 0;
    bool aw_done = false, w_done = false;

    void csr_drive_sample() {
        Dut* t = top;
#if CSR_AXIL
        // inputs were set before eval() in the previous call; here: sample and set for next
        switch (csr_state) {
        case CSR_WRITE:
            if (t->s_axil_awvalid() && t->s_axil_awready()) aw_done = true;
            if (t->s_axil_wvalid() && t->s_axil_wready()) w_done = true;
            if (t->s_axil_bvalid() && t->s_axil_bready()) csr_state = CSR_DONE;
            break;
        case CSR_READ:
            if (t->s_axil_arvalid() && t->s_axil_arready()) aw_done = true;
            if (t->s_axil_rvalid() && t->s_axil_rready()) { csr_rdata = t->s_axil_rdata(); csr_state = CSR_DONE; }
            break;
        default: break;
        }
#else
        if ((csr_state == CSR_WRITE || csr_state == CSR_READ) && t->wb_ack()) {
            csr_rdata = t->wb_dat_r();
            csr_state = CSR_DONE;
        }
#endif
    }
    void csr_set_inputs() {
        Dut* t = top;
#if CSR_AXIL
        bool wr = csr_state == CSR_WRITE, rd = csr_state == CSR_READ;
        t->s_axil_awaddr(csr_addr); t->s_axil_araddr(csr_addr);
        t->s_axil_wdata(csr_wdata); t->s_axil_wstrb(0xF);
        t->s_axil_awprot(0); t->s_axil_arprot(0);
        t->s_axil_awvalid(wr && !aw_done);
        t->s_axil_wvalid(wr && !w_done);
        t->s_axil_bready(wr);
        t->s_axil_arvalid(rd && !aw_done);
        t->s_axil_rready(rd);
#else
        bool act = csr_state == CSR_WRITE || csr_state == CSR_READ;
        t->wb_adr(csr_addr >> 2); t->wb_dat_w(csr_wdata); t->wb_sel(1);
        t->wb_cyc(act); t->wb_stb(act); t->wb_we(csr_state == CSR_WRITE);
#endif
    }
    long csr_access(bool write, uint32_t addr, uint32_t data, uint32_t* out) {
        csr_state = write ? CSR_WRITE : CSR_READ;
        csr_addr = addr; csr_wdata = data; aw_done = w_done = false;
        uint64_t c0 = cycle;
        for (int i = 0; i < 1000 && csr_state != CSR_DONE; ++i) {
            csr_set_inputs();
            step();
        }
        bool ok = csr_state == CSR_DONE;
        csr_state = CSR_IDLE;
        csr_set_inputs();
        if (out) *out = csr_rdata;
        return ok ? long(cycle - c0) : -1;
    }
};

}  // namespace

extern "C" {

void* nms_sim_new(uint64_t mem_size, uint32_t latency, uint32_t stall, uint64_t seed) {
    Sim* s = new Sim(mem_size, latency, stall, seed);
    s->csr_set_inputs();
    s->top->rst(1);
    for (int i = 0; i < 4; ++i) s->step();
    s->top->rst(0);
    s->step();
    return s;
}

void nms_sim_free(void* h) { delete static_cast<Sim*>(h); }

void nms_sim_reset(void* h, int cycles) {
    Sim* s = static_cast<Sim*>(h);
    s->reads.clear(); s->writes.clear(); s->bresps.clear();
    s->top->rst(1);
    for (int i = 0; i < cycles; ++i) s->step();
    s->top->rst(0);
    s->step();
}

int nms_sim_write_mem(void* h, uint64_t addr, const uint8_t* data, uint64_t size) {
    Sim* s = static_cast<Sim*>(h);
    if (addr + size > s->mem.size()) return -1;
    std::memcpy(s->mem.data() + addr, data, size);
    return 0;
}

int nms_sim_read_mem(void* h, uint64_t addr, uint8_t* data, uint64_t size) {
    Sim* s = static_cast<Sim*>(h);
    if (addr + size > s->mem.size()) return -1;
    std::memcpy(data, s->mem.data() + addr, size);
    return 0;
}

long nms_sim_csr_write(void* h, uint32_t addr, uint32_t value) {
    return static_cast<Sim*>(h)->csr_access(true, addr, value, nullptr);
}

long nms_sim_csr_read(void* h, uint32_t addr, uint32_t* value) {
    return static_cast<Sim*>(h)->csr_access(false, addr, 0, value);
}

// Step until irq is high (or max_cycles); returns the cycles stepped, -1 if irq never rose.
long nms_sim_run_until_irq(void* h, uint64_t max_cycles) {
    Sim* s = static_cast<Sim*>(h);
    uint64_t c0 = s->cycle;
    while (!s->top->irq()) {
        if (s->cycle - c0 >= max_cycles) return -1;
        s->step();
    }
    return long(s->cycle - c0);
}

// Step exactly n cycles (for benchmarks and abort tests).
void nms_sim_run(void* h, uint64_t n) {
    Sim* s = static_cast<Sim*>(h);
    for (uint64_t i = 0; i < n; ++i) s->step();
}

// counters: 0 cycle, 1 violations, 2 read beats, 3 write beats, 4 read bursts, 5 write bursts,
// 6 clock edges whose single CXXRTL eval() did not converge (0 under Verilator)
uint64_t nms_sim_counter(void* h, int which) {
    Sim* s = static_cast<Sim*>(h);
    switch (which) {
    case 0: return s->cycle;
    case 1: return s->violations;
    case 2: return s->read_beats;
    case 3: return s->write_beats;
    case 4: return s->read_bursts;
    case 5: return s->write_bursts;
    case 6: return s->dut.unconverged;
    default: return 0;
    }
}

}  // extern "C"
