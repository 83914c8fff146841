`default_nettype none
// Scalar unit: the per-vector registers of the integer spec and the steps between passes
// (see hardware/isa.py): rsqrt by table (intref.rsqrt_fixed), the quantiser's reciprocal by
// restoring division, the requantisation multiplier (intref.output_multiplier) and the RMSNorm eps
// term (intref.eps_term). Multi-cycle with a fixed cycle count per command (the cycle model needs
// no data-dependent terms); `busy` is high until the command's results are written.
//
// Timing: every step is short. bit_length is a two-stage tree (the byte holding the leading one,
// then the bit in it); variable shifts go through a two-stage shifter (by a multiple of 8, then
// by 0..7); the wide products (amax·r, M·pp, EPS_M·z) are shift-and-add, one multiplier bit a
// cycle into a 64-bit accumulator; the rsqrt table address, the table read, the difference of its
// two entries and their interpolation product each have their own register stage. Values a step
// needs from an earlier one (the eps rounding term, the output multiplier's e/kq part) are
// registered while the step before them runs. Control is one-hot: the command arrives decoded
// (`go`, one bit per SCALAR sub-op, registered by the core) and the state is a one-hot register,
// so each register's enable is a bit or two, not a decode of a binary state spread over the part
// (that decode, feeding the reciprocal's 40 clock enables, was the core's critical path).
module mmf_scalar #(
    parameter        RSQRT_HEX = "rsqrt.hex",   // $readmemh image of intspec.RSQRT_TABLE (385 entries)
    parameter [30:0] EPS_M     = 31'd1125899907, // eps ≈ EPS_M·2^-EPS_S (intspec.EPS_M / EPS_S)
    parameter        EPS_S     = 50
) (
    input  wire               clk,
    input  wire               rst,
    // end of a NORM pass: its op and reductions
    input  wire               pass_end,
    input  wire [1:0]         pass_op,
    input  wire [31:0]        pass_top,
    input  wire [63:0]        pass_ss,
    // commands
    input  wire [7:0]         go,      // one-hot SCALAR sub-op (hardware/isa.py SCALAR_OPS), only while idle
    input  wire [31:0]        imm,
    input  wire [15:0]        bimm,
    output wire               busy,
    // registers the datapath uses
    output reg  signed [7:0]  k,
    output reg  [39:0]        recip,
    output reg  [30:0]        mm,
    output reg  [5:0]         me
);
`include "mmf_math.vh"

    // state bits (one-hot)
    localparam integer S_IDLE = 0, S_BLA = 1, S_BLB = 2, S_SHA = 3, S_SHB = 4, S_MUL = 5,
                       S_RSQ1 = 6, S_RSQ2 = 7, S_RSQ3 = 8, S_RSQ4 = 9, S_RSQ5 = 10, S_DIV = 11,
                       S_DIVUP = 12, S_OUT1 = 13, S_OUT2 = 14, S_OUT3 = 15, S_EPS1 = 16,
                       S_EPS2 = 17, S_EPS3 = 18, S_EPS4 = 19, S_EPS5 = 20, S_EPS6 = 21,
                       S_RSQ2B = 22, NS = 23;
    function [NS-1:0] oh;
        input integer i;
        oh = {{(NS-1){1'b0}}, 1'b1} << i;
    endfunction
    localparam [63:0] EPS_MAX = 64'd1 << 56;
    localparam signed [15:0] EPS_S16 = EPS_S;

    reg [16:0] rsqrt_rom [0:384];
    initial $readmemh(RSQRT_HEX, rsqrt_rom);

    reg        [NS-1:0] st, ret;
    reg        [31:0] amax;
    reg               amax_nz;
    reg        [63:0] ss, z;
    reg signed [7:0]  kq, e;
    reg        [16:0] r;
    reg signed [15:0] p;
    // k = normalize16's shift of the last pass's max, two cycles after pass_end (tree bit_length)
    reg        [1:0]  k_pend;
    reg        [31:0] k_top;
    reg        [11:0] k_bla;
    assign busy = !st[S_IDLE] | (|go) | (|k_pend);

    // shared sub-steps: bit_length of bl_v (S_BLA, S_BLB -> bits), shift of sh_v by sh_n (right
    // when !sh_left; S_SHA, S_SHB), shift-and-add product mul_x·mul_y over mul_n bits (S_MUL -> acc)
    reg  [11:0] bl_a;
    reg  [63:0] bl_v;
    reg  [6:0]  bits;
    reg  [63:0] sh_v;
    reg  [5:0]  sh_n;
    reg         sh_left;
    reg  [63:0] mul_x, acc;
    reg  [30:0] mul_y;
    reg  [4:0]  mul_n;

    // rsqrt: e even, t = S >> e in [2^14, 2^16), idx = (t >> 7) - 128
    wire signed [7:0]  e_raw  = $signed({1'b0, bits}) - 8'sd15;
    wire signed [7:0]  e_even = (e_raw >>> 1) <<< 1;
    // idx = clamp((t >> 7) - 128, 0, 383): t < 2^14 -> 0, t >= 2^16 -> 383, else t[15:7] - 128
    wire        [8:0]  idx    = (sh_v[63:14] == 50'd0) ? 9'd0 : (sh_v[63:16] != 48'd0) ? 9'd383
                                                                 : sh_v[15:7] - 9'd128;
    reg         [8:0]  rsq_idx, rsq_idx1;  // idx and idx + 1 registered: the table address comes from flip-flops
    reg         [16:0] lo, hi;
    reg         [6:0]  t_frac;
    reg  signed [17:0] dlt;
    reg  signed [25:0] dprod;
    reg                rsq_zero;
    wire signed [25:0] dround = (dprod + 26'sd64) >>> 7;

    // division 127·2^32 / amax, one quotient bit a cycle from the top, then rounded up (S_DIVUP) as
    // intref.quantize_int8 specifies: a ceiling reciprocal makes exact ties round away from zero.
    // The dividend's bits come from a shift register and the quotient shifts into recip from the
    // bottom: no bit-select by the step counter in the loop.
    localparam [38:0] DIVIDEND = {7'd127, 32'd0};
    reg  [5:0]  div_i;
    reg  [38:0] rem, dvd;
    wire [39:0] rem_sh = {rem, dvd[38]};
    wire [40:0] dsub   = {1'b0, rem_sh} - {9'd0, amax};
    wire        qbit   = amax_nz && !dsub[40];     // rem_sh >= amax

    // output multiplier: me = scale_shift + 23 + e/2 - kq - 32, clamped to 1..62
    wire signed [15:0] e16  = {{8{e[7]}}, e};
    wire signed [15:0] kq16 = {{8{kq[7]}}, kq};
    reg  signed [15:0] me_ek;            // 23 + e/2 - kq - 32: e and kq are set cycles before OUTMUL
    wire signed [15:0] me_w = $signed({1'b0, bimm[14:0]}) + me_ek;
    reg         [5:0]  me_n;

    // eps term: b = max(bitlen(z) - 31, 0); prod = EPS_M·(z >> b); shift = EPS_S - b + 2p
    reg         [5:0]  b_cut;
    wire        [6:0]  cut7 = bits - 7'd31;
    reg  signed [15:0] eps_shift;
    reg                too_big, eps_zero;
    reg         [63:0] eps_e;
    // the rounding shift's clamp, direction, amount and 2^(s-1) follow eps_shift through registers:
    // eps_shift is set in S_EPS2, 30+ cycles (the product) before S_EPS4 uses them
    reg  signed [15:0] sh_cl;
    reg                eps_left;
    reg         [5:0]  eps_n;
    reg         [63:0] half;
    always @(posedge clk) begin
        sh_cl <= (eps_shift < -16'sd56) ? -16'sd56 : eps_shift;
        eps_left <= (sh_cl <= 16'sd0);
        eps_n <= (sh_cl <= 16'sd0) ? 6'd0 - sh_cl[5:0] : sh_cl[5:0];
        half <= (sh_cl > 16'sd0) ? (64'd1 << (sh_cl[5:0] - 6'd1)) : 64'd0;
        me_ek <= 16'sd23 + (e16 >>> 1) - kq16 - 16'sd32;
        // the rsqrt table is read every cycle: its address registers change only in S_RSQ2, so lo
        // and hi hold from S_RSQ2B on (no enable from the state)
        lo <= rsqrt_rom[rsq_idx];
        hi <= rsqrt_rom[rsq_idx1];
    end
    wire _unused_ok = &{1'b0, bimm[15], dsub[39], sh_cl[15:6], dround[25:17], cut7[6], 1'b0};

    always @(posedge clk) begin
        if (rst) begin
            st <= oh(S_IDLE);
            k <= 0; kq <= 0; e <= 0; r <= 0; p <= 0;
            amax <= 0; amax_nz <= 1'b0; ss <= 0; z <= 0;
            recip <= 0; mm <= 0; me <= 6'd1;
            k_pend <= 2'd0;
        end else begin
            // ---- end of a pass: reductions in, k two cycles later
            k_pend <= {k_pend[0], 1'b0};
            if (pass_end && pass_op != 2'd3) begin
                k_top <= pass_top;
                k_pend <= 2'b01;
                if (pass_op != 2'd0) begin
                    ss <= pass_ss;
                    kq <= k;
                    amax <= pass_top;
                    amax_nz <= (pass_top != 32'd0);
                end
            end
            k_bla <= mmf_bitlen_a({32'd0, k_top});
            if (k_pend[1]) k <= (k_top == 32'd0) ? 8'sd0 : $signed({1'b0, mmf_bitlen_b(k_bla)}) - 8'sd15;

            // one arm per state bit; exactly one is set
            if (st[S_IDLE]) begin
                if (go[0]) begin                         // RSQRT
                    bl_v <= ss;
                    rsq_zero <= (ss == 64'd0);
                    ret <= oh(S_RSQ1);
                    st <= oh(S_BLA);
                end
                if (go[1]) begin                         // RECIP
                    rem <= 39'd0;
                    dvd <= DIVIDEND;
                    recip <= 40'd0;
                    div_i <= 6'd38;
                    st <= oh(S_DIV);
                end
                if (go[2]) st <= oh(S_OUT1);             // OUTMUL
                if (go[3]) p <= imm[15:0];               // PSET
                if (go[4]) p <= p + {{8{kq[7]}}, kq};    // PADDK
                if (go[5]) z <= ss;                      // ZSAVE
                if (go[6]) z <= {32'd0, imm};            // ZSET
                if (go[7]) begin                         // EPS
                    bl_v <= z;
                    ret <= oh(S_EPS1);
                    st <= oh(S_BLA);
                end
            end

            // ---- shared sub-steps
            if (st[S_BLA]) begin
                bl_a <= mmf_bitlen_a(bl_v);
                st <= oh(S_BLB);
            end
            if (st[S_BLB]) begin
                bits <= mmf_bitlen_b(bl_a);
                st <= ret;
            end
            if (st[S_SHA]) begin
                sh_v <= sh_left ? sh_v << {sh_n[5:3], 3'b000} : sh_v >> {sh_n[5:3], 3'b000};
                st <= oh(S_SHB);
            end
            if (st[S_SHB]) begin
                sh_v <= sh_left ? sh_v << sh_n[2:0] : sh_v >> sh_n[2:0];
                st <= ret;
            end
            if (st[S_MUL]) begin
                if (mul_y[0]) acc <= acc + mul_x;
                mul_x <= mul_x << 1;
                mul_y <= mul_y >> 1;
                mul_n <= mul_n - 5'd1;
                if (mul_n == 5'd1) st <= ret;
            end

            // ---- RSQRT: bits -> e, t = ss >> e -> table -> interpolation
            if (st[S_RSQ1]) begin
                e <= rsq_zero ? 8'sd0 : e_even;
                sh_v <= ss;
                sh_left <= !rsq_zero && e_even[7];
                sh_n <= rsq_zero ? 6'd0 : e_even[7] ? 6'd0 - e_even[5:0] : e_even[5:0];
                ret <= oh(S_RSQ2);
                st <= oh(S_SHA);
            end
            if (st[S_RSQ2]) begin
                t_frac <= sh_v[6:0];
                rsq_idx <= idx;
                rsq_idx1 <= idx + 9'd1;
                st <= oh(S_RSQ2B);
            end
            if (st[S_RSQ2B]) st <= oh(S_RSQ3);      // the table read (lo, hi above)
            if (st[S_RSQ3]) begin
                dlt <= $signed({1'b0, hi}) - $signed({1'b0, lo});
                st <= oh(S_RSQ4);
            end
            if (st[S_RSQ4]) begin
                dprod <= dlt * $signed({1'b0, t_frac});
                st <= oh(S_RSQ5);
            end
            if (st[S_RSQ5]) begin
                r <= rsq_zero ? 17'd0 : lo + dround[16:0];
                st <= oh(S_IDLE);
            end

            // ---- RECIP
            if (st[S_DIV]) begin
                rem <= qbit ? dsub[38:0] : rem_sh[38:0];
                recip <= {recip[38:0], qbit};
                dvd <= dvd << 1;
                div_i <= div_i - 6'd1;
                if (div_i == 6'd0) st <= oh(S_DIVUP);
            end
            if (st[S_DIVUP]) begin
                if (amax_nz && rem != 39'd0) recip <= recip + 40'd1;
                st <= oh(S_IDLE);
            end

            // ---- OUTMUL: pp = rsr(amax·r, 8); mm = rsr(M·pp, 24)
            if (st[S_OUT1]) begin
                me_n <= (me_w < 16'sd1) ? 6'd1 : (me_w > 16'sd62) ? 6'd62 : me_w[5:0];
                mul_x <= {32'd0, amax};
                mul_y <= {14'd0, r};
                mul_n <= 5'd17;
                acc <= 64'd0;
                ret <= oh(S_OUT2);
                st <= oh(S_MUL);
            end
            if (st[S_OUT2]) begin
                mul_x <= (acc + 64'd128) >> 8;
                mul_y <= imm[30:0];
                mul_n <= 5'd31;
                acc <= 64'd0;
                ret <= oh(S_OUT3);
                st <= oh(S_MUL);
            end
            if (st[S_OUT3]) begin
                mm <= acc[54:24] + {30'd0, acc[23]};
                me <= me_n;
                st <= oh(S_IDLE);
            end

            // ---- EPS: bits of z -> b -> z >> b -> EPS_M·(z >> b) -> bits -> rounded shift
            if (st[S_EPS1]) begin
                b_cut <= (bits > 7'd31) ? cut7[5:0] : 6'd0;
                sh_v <= z;
                sh_left <= 1'b0;
                sh_n <= (bits > 7'd31) ? cut7[5:0] : 6'd0;
                ret <= oh(S_EPS2);
                st <= oh(S_SHA);
            end
            if (st[S_EPS2]) begin
                eps_shift <= EPS_S16 - $signed({10'd0, b_cut}) + (p <<< 1);
                mul_x <= {33'd0, EPS_M};
                mul_y <= sh_v[30:0];
                mul_n <= 5'd31;
                acc <= 64'd0;
                ret <= oh(S_EPS3);
                st <= oh(S_MUL);
            end
            if (st[S_EPS3]) begin
                bl_v <= acc;
                ret <= oh(S_EPS4);
                st <= oh(S_BLA);
            end
            if (st[S_EPS4]) begin
                too_big <= (eps_shift <= 0) && ($signed({9'd0, bits}) - eps_shift > 16'sd56);
                eps_zero <= (eps_shift >= 16'sd64);
                sh_v <= acc + half;
                sh_left <= eps_left;
                sh_n <= eps_n;
                ret <= oh(S_EPS5);
                st <= oh(S_SHA);
            end
            if (st[S_EPS5]) begin
                eps_e <= (too_big || (!eps_zero && sh_v > EPS_MAX)) ? EPS_MAX : eps_zero ? 64'd0 : sh_v;
                st <= oh(S_EPS6);
            end
            if (st[S_EPS6]) begin
                ss <= ss + eps_e;
                st <= oh(S_IDLE);
            end

        end
    end
endmodule
`default_nettype wire
