// The simulated board (nms.verif.sim.boardsim): the Verilated BoardCore (accelerator + on-board
// memory + UART + uartbone bridge) with a bit-level UART line model on its pins.
//
// The host side is a byte queue: bytes given to board_feed() are shifted into uart_rx one bit
// per `divisor` cycles (8N1, back to back, like an FTDI chip with a full buffer); uart_tx is
// sampled in the middle of every bit and each complete frame lands in the output queue that
// board_take() drains. Python enters only to move bytes and to run a batch of cycles.
//
// board_run(max_cycles) steps until the board is quiescent — nothing left to shift in, the
// transmit line idle for two byte times, STATUS.busy low — or max_cycles have passed, and returns
// the cycles stepped (a caller then waits for the host instead of burning cycles).

#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

#include "Vboard.h"
#include "verilated.h"

namespace {

struct Board {
    VerilatedContext ctx;
    Vboard* top;
    uint64_t cycle = 0;
    uint32_t divisor;
    std::deque<uint8_t> in, out;
    // receiver side of the host (what the board shifts into uart_rx)
    int rx_bit = -1;        // -1 idle; 0 start, 1..8 data, 9 stop
    uint32_t rx_timer = 0;
    uint8_t rx_byte = 0;
    // host receiver on uart_tx
    int tx_bit = -1;
    uint32_t tx_timer = 0;
    uint32_t tx_shift = 0;
    uint64_t tx_idle = 0;   // cycles the tx line has been idle (high, no frame in progress)
    uint64_t rx_idle = 0;   // cycles since the last byte was shifted in
    uint64_t frame_errors = 0, bytes_in = 0, bytes_out = 0;
    uint64_t last_active = 0;  // last cycle with a bit on either line or STATUS.busy high

    explicit Board(uint32_t div) : divisor(div) {
        top = new Vboard(&ctx);
        top->uart_rx = 1;
        top->uart_divisor = div;
        top->clk = 0;
        top->rst = 1;
        top->eval();
        for (int i = 0; i < 4; ++i) step();
        top->rst = 0;
        top->eval();
    }
    ~Board() { top->final(); delete top; }

    void line_in() {   // drive uart_rx for this cycle
        if (rx_bit < 0) {
            if (in.empty()) { top->uart_rx = 1; ++rx_idle; return; }
            rx_idle = 0;
            rx_byte = in.front(); in.pop_front(); ++bytes_in;
            rx_bit = 0; rx_timer = divisor;
        }
        top->uart_rx = rx_bit == 0 ? 0 : rx_bit == 9 ? 1 : (rx_byte >> (rx_bit - 1)) & 1;
        if (--rx_timer == 0) {
            rx_timer = divisor;
            if (++rx_bit == 10) rx_bit = -1;
        }
    }

    void line_out() {  // sample uart_tx after this cycle's edge
        int level = top->uart_tx & 1;
        if (tx_bit < 0) {
            if (!level) { tx_bit = 0; tx_timer = divisor / 2; tx_shift = 0; tx_idle = 0; }
            else ++tx_idle;
            return;
        }
        if (tx_timer-- != 0) return;
        tx_timer = divisor - 1;
        if (tx_bit >= 1 && tx_bit <= 8) tx_shift |= uint32_t(level) << (tx_bit - 1);
        if (tx_bit == 9) {
            if (level) { out.push_back(uint8_t(tx_shift)); ++bytes_out; }
            else ++frame_errors;
            tx_bit = -1;
            return;
        }
        ++tx_bit;
    }

    void step() {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
        ++cycle;
    }

    bool quiet() const {
        return in.empty() && rx_bit < 0 && tx_bit < 0 && tx_idle > 20ull * divisor
               && rx_idle > 20ull * divisor
               && !top->led_busy;
    }
};

}  // namespace

extern "C" {

void* board_new(uint32_t divisor) { return new Board(divisor); }
void board_free(void* h) { delete static_cast<Board*>(h); }

void board_feed(void* h, const char* data, uint64_t n) {
    Board* b = static_cast<Board*>(h);
    for (uint64_t i = 0; i < n; ++i) b->in.push_back(uint8_t(data[i]));
}

uint64_t board_take(void* h, char* buf, uint64_t cap) {
    Board* b = static_cast<Board*>(h);
    uint64_t n = 0;
    while (n < cap && !b->out.empty()) { buf[n++] = char(b->out.front()); b->out.pop_front(); }
    return n;
}

uint64_t board_pending_out(void* h) { return static_cast<Board*>(h)->out.size(); }

uint64_t board_run(void* h, uint64_t max_cycles) {
    Board* b = static_cast<Board*>(h);
    uint64_t n = 0;
    while (n < max_cycles) {
        if (b->quiet()) break;
        b->line_in();
        b->step();
        b->line_out();
        if (b->rx_bit >= 0 || b->tx_bit >= 0 || b->top->led_busy) b->last_active = b->cycle;
        ++n;
    }
    return n;
}

void board_set_divisor(void* h, uint32_t divisor) {
    Board* b = static_cast<Board*>(h);
    b->divisor = divisor;
    b->top->uart_divisor = divisor;
}

uint64_t board_counter(void* h, int which) {
    Board* b = static_cast<Board*>(h);
    switch (which) {
        case 0: return b->cycle;
        case 1: return b->bytes_in;
        case 2: return b->bytes_out;
        case 3: return b->frame_errors;
        case 4: return b->top->led_busy;
        case 5: return b->top->led_done;
        case 6: return b->top->led_error;
        case 7: return b->last_active;
        default: return 0;
    }
}

}  // extern "C"
