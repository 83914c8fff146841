`default_nettype none
// Normalisation unit: the block-normalisation, RMSNorm-gain and int8-quantiser steps of the integer
// spec (intref.normalize16 / apply_gain / product16 / sum_squares / quantize_int8), one element per
// cycle, with the per-vector reductions (max |.|, sum of squares) the scalar unit needs.
//
//   op 0 AMAX       top = max |a|                                   (no output)
//   op 1 NORM16     d = sat16(rshift_round(a, k));  ss = Σ d², top = max |d|
//   op 2 NORM16MUL  d = sat16(rshift_round(a, k))·b; ss = Σ sat16(..)², top = max |d|
//   op 3 QUANT      q = sign(a)·((|a|·recip + 2^31) >> 32)          (int8, to the x buffer)
//                   a is an int16 value (NORM16's output, as intref.quantize_int8 takes it)
//
// `clear` starts a vector (zeroes the reductions); results appear LAT = 6 cycles after in_valid,
// reductions are final one cycle after the last result.
//
// Timing: the rounding add, the two halves of the variable shift (a multiple of 8, then 0..7) and
// the saturation are separate stages; |a|·recip is three 16×17 partial products, registered, then
// summed in two steps; the gain and square products take their operands from registers.
module mmf_norm (
    input  wire               clk,
    input  wire               rst,
    input  wire               clear,
    input  wire               in_valid,
    input  wire [1:0]         op,
    input  wire signed [31:0] a,
    input  wire signed [31:0] b,
    input  wire signed [7:0]  k,
    input  wire [39:0]        recip,
    output reg                out_valid,
    output reg  signed [31:0] d,
    output reg  signed [7:0]  q,
    output reg  [31:0]        top,
    output reg  [63:0]        ss
);
`include "mmf_math.vh"

    localparam LAT = 6;
    reg [LAT-1:1] v;
    reg [1:0]     op_d  [1:LAT];
    reg [31:0]    abs_d [1:LAT];
    reg signed [15:0] b_d [1:4];
    reg [LAT-1:1] neg_d;
    integer i;

    // s1: rounding add (k > 0) and the shift's direction and amount; |a|
    wire [31:0] absa  = a[31] ? (~a + 32'd1) : a;
    wire signed [47:0] a48 = {{16{a[31]}}, a};
    wire [47:0] half  = (k > 8'sd0) ? (48'd1 << (k[4:0] - 5'd1)) : 48'd0;
    reg  signed [47:0] x1, x2, x3;
    reg         [4:0]  kn1;
    reg         [2:0]  kn2;
    reg                kl1, kl2;
    // s2-s4: |a|·recip, a an int16 magnitude (<= 2^15) times the 40-bit reciprocal in 17-bit pieces
    reg  [15:0] aq1;
    reg  [32:0] qp0, qp1;
    reg  [21:0] qp2;
    reg  [51:0] qs3;
    reg  [21:0] qp2_3;
    reg  [55:0] qs4;
    // s4 d16, s5 products, s6 outputs, then the reductions
    reg  signed [15:0] d16_4, d16_5;
    reg  signed [31:0] prod5, sq5, sq6;
    reg         [7:0]  mag5;
    wire signed [31:0] dd = (op_d[5] == 2'd2) ? prod5 : {{16{d16_5[15]}}, d16_5};
    wire _unused_ok = &{1'b0, b[31:16], qs4[55:40], qs4[30:0], 1'b0};
    always @(posedge clk) begin
        v <= rst ? {(LAT-1){1'b0}} : {v[LAT-2:1], in_valid};
        op_d[1] <= op;
        abs_d[1] <= absa;
        b_d[1] <= b[15:0];
        neg_d <= {neg_d[LAT-2:1], a[31]};
        for (i = 2; i < LAT; i = i + 1) begin
            op_d[i] <= op_d[i-1];
            abs_d[i] <= abs_d[i-1];
        end
        for (i = 2; i <= 4; i = i + 1) b_d[i] <= b_d[i-1];

        x1 <= a48 + $signed(half);
        kl1 <= (k <= 8'sd0);
        kn1 <= (k <= 8'sd0) ? 5'd0 - k[4:0] : k[4:0];
        x2 <= kl1 ? x1 <<< {kn1[4:3], 3'b000} : x1 >>> {kn1[4:3], 3'b000};
        kl2 <= kl1;
        kn2 <= kn1[2:0];
        x3 <= kl2 ? x2 <<< kn2 : x2 >>> kn2;
        d16_4 <= mmf_sat16({{16{x3[47]}}, x3});

        aq1 <= absa[15:0];
        qp0 <= {17'd0, aq1} * {16'd0, recip[16:0]};
        qp1 <= {17'd0, aq1} * {16'd0, recip[33:17]};
        qp2 <= {6'd0, aq1} * {16'd0, recip[39:34]};
        qs3 <= {19'd0, qp0} + {2'd0, qp1, 17'd0};
        qp2_3 <= qp2;
        qs4 <= {4'd0, qs3} + {qp2_3, 34'd0};

        d16_5 <= d16_4;
        prod5 <= d16_4 * b_d[4];
        sq5 <= d16_4 * d16_4;
        mag5 <= qs4[39:32] + {7'd0, qs4[31]};   // (|a|·recip + 2^31) >> 32

        out_valid <= !rst && v[LAT-1];
        d <= dd;
        q <= neg_d[LAT-1] ? -mag5 : mag5;
        abs_d[LAT] <= (op_d[5] == 2'd0) ? abs_d[5] : (dd[31] ? (~dd + 32'd1) : dd);
        op_d[LAT] <= op_d[5];
        sq6 <= sq5;
    end

    // reductions, one cycle after each result
    always @(posedge clk) begin
        if (rst || clear) begin
            top <= 32'd0;
            ss <= 64'd0;
        end else if (out_valid && op_d[LAT] != 2'd3) begin
            if (abs_d[LAT] > top) top <= abs_d[LAT];
            if (op_d[LAT] != 2'd0) ss <= ss + {32'd0, sq6};
        end
    end
endmodule
`default_nettype wire
