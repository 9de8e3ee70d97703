// SPDX-License-Identifier: BSD-3-Clause
// hwq's RTL board: a generated accelerator compiled by Verilator, driven over its AXI-stream ports by this loop
// (no cocotb, no Python per cycle). hwq.rtl.cycle_model writes hwq_ports.h (port widths, word packing) and talks
// to this program over stdin/stdout, one line per command:
//
//   run N IDLE HEX   stream N copies of one image (HEX: its input elements, one byte each) back to back into a
//                    freshly reset circuit, output always ready; answers
//                      "done c_1 ... c_N" (the cycle each image's last output beat was taken, counted from the
//                      first cycle the input was offered; the protocol of hwq.rtl.tb_stream's free-running phase)
//                      "out w ..."        (the last image's output beats, each as OUT_WORDS 32-bit hex words)
//                    or, when no beat went in or out for IDLE cycles,
//                      "hang CYCLE IN_BEATS OUT_BEATS" (how far it got).
//   quit
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "verilated.h"
#include "hwq_ports.h"

static TOP* top;

// One clock cycle: inputs already set while the clock is low; the rising edge moves every beat that was valid
// and ready.
static void rising_edge() {
    top->clk = 1;
    top->eval();
    top->clk = 0;
    top->eval();
}

static void reset() {
    top->s_axis_tvalid = 0;
    top->m_axis_tready = 0;
    top->rst = 1;
    for (int i = 0; i < 3; i++) rising_edge();
    top->rst = 0;
    rising_edge();
}

// The image's input elements as beats of IN_WORDS 32-bit words, element 0 of a beat in its least significant bits.
static std::vector<uint32_t> pack_input(const std::vector<uint32_t>& elems) {
    std::vector<uint32_t> words(IN_BEATS * IN_WORDS, 0);
    const uint32_t mask = IN_BITS >= 32 ? 0xffffffffu : ((1u << IN_BITS) - 1u);
    for (size_t e = 0; e < elems.size(); e++) {
        size_t beat = e / IN_BEAT, bit = (e % IN_BEAT) * IN_BITS;
        uint64_t v = elems[e] & mask;
        size_t w = beat * IN_WORDS + bit / 32, off = bit % 32;
        words[w] |= (uint32_t)(v << off);
        if (off + IN_BITS > 32 && bit / 32 + 1 < IN_WORDS) words[w + 1] |= (uint32_t)(v >> (32 - off));
    }
    return words;
}

static void run(long n, long idle, const std::string& hex) {
    std::vector<uint32_t> elems;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) elems.push_back(std::stoul(hex.substr(i, 2), nullptr, 16));
    if ((long)elems.size() != (long)IN_BEATS * IN_BEAT) {
        std::printf("error input has %zu elements, the design takes %ld\n", elems.size(), (long)IN_BEATS * IN_BEAT);
        std::fflush(stdout);
        return;
    }
    const std::vector<uint32_t> beats = pack_input(elems);
    reset();
    std::vector<uint64_t> ends;
    std::vector<uint32_t> last_out(OUT_BEATS * OUT_WORDS, 0), word(OUT_WORDS, 0);
    long in_beats_total = n * IN_BEATS, out_beats_total = n * OUT_BEATS, in_done = 0, out_done = 0;
    uint64_t cycle = 0, last_fire = 0;
    top->m_axis_tready = 1;
    while (out_done < out_beats_total) {
        // clock low: offer the next input beat, then see which beats the coming edge moves
        bool offering = in_done < in_beats_total;
        top->s_axis_tvalid = offering;
        if (offering) set_input(top, &beats[(in_done % IN_BEATS) * IN_WORDS]);
        top->eval();
        bool in_fire = offering && top->s_axis_tready;
        bool out_fire = top->m_axis_tvalid;
        if (out_fire) {
            get_output(top, word.data());
            long beat = out_done % OUT_BEATS;
            for (int i = 0; i < OUT_WORDS; i++) last_out[beat * OUT_WORDS + i] = word[i];
            if (beat == OUT_BEATS - 1) ends.push_back(cycle);
        }
        if (in_fire || out_fire) last_fire = cycle;
        else if ((long)(cycle - last_fire) > idle) {
            std::printf("hang %llu %ld %ld\n", (unsigned long long)cycle, in_done, out_done);
            std::fflush(stdout);
            return;
        }
        rising_edge();
        cycle++;
        in_done += in_fire;
        out_done += out_fire;
    }
    std::string line = "done";
    for (uint64_t e : ends) line += " " + std::to_string(e);
    std::printf("%s\nout", line.c_str());
    for (uint32_t w : last_out) std::printf(" %x", w);
    std::printf("\n");
    std::fflush(stdout);
}

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    top = new TOP;
    top->clk = 0;
    top->eval();
    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream words(line);
        std::string verb;
        words >> verb;
        if (verb == "quit") break;
        if (verb == "run") {
            long n = 0, idle = 0;
            std::string hex;
            words >> n >> idle >> hex;
            run(n, idle, hex);
        } else {
            std::printf("error unknown command\n");
            std::fflush(stdout);
        }
    }
    top->final();
    delete top;
    return 0;
}
