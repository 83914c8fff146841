`default_nettype none
// Row-wise unit: the integer spec's element-wise steps (docs/integer-spec.md,
// src/mmfree_cli/quant/intref.py), one element per cycle, fully pipelined, fixed latency.
//
//   op 0 SIGMOID  y = sigmoid_q(a, frac)                            (Q0.20)
//   op 1 SILU     y = rshift_round(a * sigmoid_q(a, frac), 20)       (a's format)
//   op 2 FGATE    y = s + rshift_round(b * (2^20 - s), 20), s = sigmoid_q(a, 16); b = lower bound
//   op 3 RECUR    y = sat32(rshift_round(b * c, 20) + rshift_round(silu_q(a, 16) * (2^20 - b), 16))
//                 a = y_i (Q15.16), b = f (Q0.20), c = h (Q11.20): input gate and state update fused
//                 so the input gate (up to 36 bits) never has to be stored
//   op 4 ADD      y = sat32(a + b)                                  (residual)
//   op 5 REQUANT  y = sat32(rshift_round(a * b, c))                 (acc * M_m >> M_e, c in 1..62)
//
// rshift_round(x, s) = floor((x + 2^(s-1)) / 2^s) for s >= 1, x for s = 0. The sigmoid table
// (1025 entries, Q0.20, intspec.SIGMOID_TABLE) is read twice per element (T[i], T[i+1]) and
// linearly interpolated; its image is the generated file named by SIGMOID_HEX.
module mmf_rowwise #(
    parameter SIGMOID_HEX = "sigmoid.hex"   // $readmemh image of the sigmoid table (generated)
) (
    input  wire               clk,
    input  wire               rst,
    input  wire               in_valid,
    input  wire [2:0]         op,
    input  wire [4:0]         frac,      // fraction bits of a for SIGMOID / SILU (7..26)
    input  wire signed [31:0] a,
    input  wire signed [31:0] b,
    input  wire signed [31:0] c,
    output reg                out_valid,
    output reg  signed [31:0] y
);
    localparam LAT = 5;
    localparam signed [63:0] ONE_G = 64'sd1 << 20;
    localparam signed [63:0] I32_MAX = 64'sd2147483647;
    localparam signed [63:0] I32_MIN = -64'sd2147483648;

    reg [20:0] sig_rom [0:1024];
    initial $readmemh(SIGMOID_HEX, sig_rom);

    function signed [63:0] rsr;          // rshift_round(x, s), s in 0..63
        input signed [63:0] x;
        input [5:0] s;
        begin
            if (s == 6'd0) rsr = x;
            else rsr = (x + (64'sd1 <<< (s - 6'd1))) >>> s;
        end
    endfunction

    function signed [31:0] sat32;
        input signed [63:0] x;
        begin
            if (x > I32_MAX) sat32 = I32_MAX[31:0];
            else if (x < I32_MIN) sat32 = I32_MIN[31:0];
            else sat32 = x[31:0];
        end
    endfunction

    // stage 1: |a| clamped to the table range, index and interpolation fraction
    reg  [LAT-2:0]     v;
    reg  [2:0]         op1, op2, op3;
    reg  signed [31:0] a1, b1, c1, a2, b2, c2, a3, b3, c3;
    reg  [4:0]         sh1, sh2;
    reg  [9:0]         idx1;
    reg  [25:0]        f1, f2;
    wire [4:0]         fr    = (op == 3'd2 || op == 3'd3) ? 5'd16 : frac;
    wire [4:0]         sh    = fr - 5'd6;
    wire [32:0]        absa  = a[31] ? -{a[31], a} : {a[31], a};
    wire [32:0]        zmax  = (33'd16 << fr) - 33'd1;
    wire [32:0]        z     = (absa > zmax) ? zmax : absa;
    wire [32:0]        zidx  = z >> sh;
    wire [32:0]        zmask = (33'd1 << sh) - 33'd1;
    always @(posedge clk) begin
        op1 <= op;
        a1 <= a;
        b1 <= b;
        c1 <= c;
        sh1 <= sh;
        idx1 <= zidx[9:0];
        f1 <= z[25:0] & zmask[25:0];
    end

    // stage 2: the two table reads
    reg [20:0] lo2, hi2;
    always @(posedge clk) begin
        op2 <= op1;
        a2 <= a1;
        b2 <= b1;
        c2 <= c1;
        sh2 <= sh1;
        f2 <= f1;
        lo2 <= sig_rom[{1'b0, idx1}];
        hi2 <= sig_rom[{1'b0, idx1} + 11'd1];
    end

    // stage 3: interpolate, mirror for negative inputs
    reg signed [63:0] sig3;
    wire signed [63:0] dlt = $signed({43'd0, hi2}) - $signed({43'd0, lo2});
    wire signed [63:0] s_p = $signed({43'd0, lo2}) + rsr(dlt * $signed({38'd0, f2}), {1'b0, sh2});
    always @(posedge clk) begin
        op3 <= op2;
        a3 <= a2;
        b3 <= b2;
        c3 <= c2;
        sig3 <= a2[31] ? ONE_G - s_p : s_p;
    end

    // stage 4: the products of each op
    reg signed [63:0] p4, q4;
    reg        [2:0]  op4r;
    reg signed [31:0] b4;
    wire signed [63:0] a3w = {{32{a3[31]}}, a3};
    wire signed [63:0] b3w = {{32{b3[31]}}, b3};
    wire signed [63:0] c3w = {{32{c3[31]}}, c3};
    always @(posedge clk) begin
        op4r <= op3;
        b4 <= b3;
        case (op3)
            3'd0: begin p4 <= sig3; q4 <= 64'sd0; end
            3'd1: begin p4 <= rsr(a3w * sig3, 6'd20); q4 <= 64'sd0; end
            3'd2: begin p4 <= sig3 + rsr(b3w * (ONE_G - sig3), 6'd20); q4 <= 64'sd0; end
            3'd3: begin p4 <= rsr(a3w * sig3, 6'd20); q4 <= rsr(b3w * c3w, 6'd20); end
            3'd4: begin p4 <= a3w + b3w; q4 <= 64'sd0; end
            default: begin p4 <= rsr(a3w * b3w, c3[5:0]); q4 <= 64'sd0; end
        endcase
    end

    // stage 5: the RECUR input gate, saturation
    wire signed [63:0] b4w = {{32{b4[31]}}, b4};
    wire _unused_ok = &{1'b0, zidx[32:10], zmask[32:26], 1'b0};
    wire signed [63:0] ig = rsr(p4 * (ONE_G - b4w), 6'd16);
    always @(posedge clk) begin
        case (op4r)
            3'd3:          y <= sat32(q4 + ig);
            3'd0, 3'd1, 3'd2: y <= p4[31:0];
            default:       y <= sat32(p4);
        endcase
    end

    always @(posedge clk) begin
        if (rst) v <= 0;
        else v <= {v[LAT-3:0], in_valid};
        out_valid <= rst ? 1'b0 : v[LAT-2];
    end
endmodule
`default_nettype wire
