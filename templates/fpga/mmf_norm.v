`default_nettype none
// Normalisation unit: the block-normalisation, RMSNorm-gain and int8-quantiser steps of the integer
// spec (intref.normalize16 / apply_gain / product16 / sum_squares / quantize_int8), one element per
// cycle, with the per-vector reductions (max |.|, sum of squares) the scalar unit needs.
//
//   op 0 AMAX       top = max |a|                                   (no output)
//   op 1 NORM16     d = sat16(rshift_round(a, k));  ss = Σ d², top = max |d|
//   op 2 NORM16MUL  d = sat16(rshift_round(a, k))·b; ss = Σ sat16(..)², top = max |d|
//   op 3 QUANT      q = sign(a)·((|a|·recip + 2^31) >> 32)          (int8, to the x buffer)
//
// `clear` starts a vector (zeroes the reductions); results appear LAT = 2 cycles after in_valid,
// reductions are final one cycle after the last result.
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

    // stage 1: shift and saturate; |a| for AMAX; the quantiser's magnitude
    reg               v1;
    reg [1:0]         op1;
    reg signed [15:0] d16;
    reg signed [15:0] b1;
    reg        [31:0] abs1;
    reg               neg1;
    reg        [7:0]  mag1;
    wire       [31:0] absa = a[31] ? (~a + 32'd1) : a;
    wire       [79:0] qprod = {48'd0, absa} * {40'd0, recip};
    wire       [63:0] qmag  = (qprod[63:0] + 64'h8000_0000) >> 32;
    wire _unused_ok = &{1'b0, qprod[79:64], qmag[63:8], b[31:16], 1'b0};
    always @(posedge clk) begin
        v1 <= in_valid & !rst;
        op1 <= op;
        d16 <= mmf_sat16(mmf_rsr({{32{a[31]}}, a}, k));
        b1 <= b[15:0];
        abs1 <= absa;
        neg1 <= a[31];
        mag1 <= qmag[7:0];
    end

    // stage 2: gain product, square, outputs
    reg               v2;
    reg [1:0]         op2;
    reg        [31:0] abs2;
    reg        [31:0] sq2;
    wire signed [31:0] prod = d16 * b1;
    wire signed [31:0] dd   = (op1 == 2'd2) ? prod : {{16{d16[15]}}, d16};
    always @(posedge clk) begin
        v2 <= v1 & !rst;
        op2 <= op1;
        out_valid <= v1 & !rst;
        d <= dd;
        q <= neg1 ? -mag1 : mag1;
        abs2 <= (op1 == 2'd0) ? abs1 : (dd[31] ? (~dd + 32'd1) : dd);
        sq2 <= d16 * d16;
    end

    // stage 3: reductions
    always @(posedge clk) begin
        if (rst || clear) begin
            top <= 32'd0;
            ss <= 64'd0;
        end else if (v2 && op2 != 2'd3) begin
            if (abs2 > top) top <= abs2;
            if (op2 != 2'd0) ss <= ss + {32'd0, sq2};
        end
    end
endmodule
`default_nettype wire
