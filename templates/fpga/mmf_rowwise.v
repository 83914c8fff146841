`default_nettype none
// Row-wise unit: the integer spec's element-wise steps (docs/integer-spec.md,
// src/mmfree_cli/quant/intref.py), one element per cycle, fully pipelined, fixed latency LAT.
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
//
// Timing: each stage does one short thing. Variable shifts take two stages (a multiple of 8, then
// 0..7) after the rounding add; the table address comes from a register; the products go through
// mmf_mul (registered partial products); saturation has its own stage after the final add.
module mmf_rowwise #(
    parameter SIGMOID_HEX = "sigmoid.hex"   // $readmemh image of the sigmoid table (generated)
) (
    input  wire               clk,
    input  wire               rst,
    input  wire               in_valid,
    input  wire [2:0]         op,        // op and frac: stable from two cycles before a pass's first
    input  wire [4:0]         frac,      // element to its last; frac = fraction bits of a for SIGMOID / SILU (7..26)
    input  wire signed [31:0] a,
    input  wire signed [31:0] b,
    input  wire signed [31:0] c,
    output reg                out_valid,
    output reg  signed [31:0] y
);
    localparam LAT = 27;                 // in_valid to out_valid
    localparam signed [63:0] ONE_G = 64'sd1 << 20;
    localparam signed [63:0] I32_MAX = 64'sd2147483647;
    localparam signed [63:0] I32_MIN = -64'sd2147483648;

    reg [20:0] sig_rom [0:1024];
    initial $readmemh(SIGMOID_HEX, sig_rom);

    // operands and op, carried down the pipeline: index = stage the value is registered in.
    // The op (and what depends on it alone: the sigmoid's shift and clamp) loads only with a valid
    // element: an idle slot's op is never used, and the enable (one lane's valid) keeps yosys from
    // merging the VEC units' identical op registers into one flip-flop fanned out across the die.
    reg [2:0]         op_d [1:LAT-1];
    reg signed [31:0] a_d  [1:20];
    reg signed [31:0] b_d  [1:21];
    reg        [5:0]  c_d  [1:15];
    reg signed [31:0] cf_d [1:13];
    integer i0, i1, i4, i5, i6;
    always @(posedge clk) begin
        if (in_valid) op_d[1] <= op;
        a_d[1] <= a;
        b_d[1] <= b;
        c_d[1] <= c[5:0];
        cf_d[1] <= c;
        for (i0 = 2; i0 <= 13; i0 = i0 + 1) cf_d[i0] <= cf_d[i0-1];
        for (i0 = 2; i0 < LAT; i0 = i0 + 1) op_d[i0] <= op_d[i0-1];
        for (i0 = 2; i0 <= 20; i0 = i0 + 1) a_d[i0] <= a_d[i0-1];
        for (i0 = 2; i0 <= 21; i0 = i0 + 1) b_d[i0] <= b_d[i0-1];
        for (i0 = 2; i0 <= 15; i0 = i0 + 1) c_d[i0] <= c_d[i0-1];
    end

    // ---- sigmoid_q(a, fr): s1 |a| and the clamp, s2 clamp, s3-s4 index, s5 table, s6 difference,
    // s7-s9 product, s10-s12 rounded shift + T[i0], s13 mirror for negative a
    // op and frac hold for a whole pass (the instruction register) and the first element comes
    // cycles after it loads, so the clamp and the shift are made from them free-running, two
    // registers ahead, and only taken per element at s1
    reg  [4:0]  fr_r, sh_r;
    reg  [32:0] zmax_r;
    always @(posedge clk) begin
        fr_r <= (op == 3'd2 || op == 3'd3) ? 5'd16 : frac;
        zmax_r <= (33'd16 << fr_r) - 33'd1;
        sh_r <= fr_r - 5'd6;
    end
    reg  [32:0] absa1, zmax1, z2, zs3;
    reg  [4:0]  sh_d [1:12];
    reg  [25:0] f3, f4, f5, f6;
    reg  [9:0]  idx4;
    reg  [20:0] lo5, lo_d [6:12];
    reg  [20:0] hi5;
    reg  [12:1] neg_d;
    wire [32:0] zs_sh = zs3 >> sh_d[3][2:0];
    always @(posedge clk) begin
        absa1 <= a[31] ? -{a[31], a} : {a[31], a};
        if (in_valid) begin
            zmax1 <= zmax_r;
            sh_d[1] <= sh_r;
        end
        for (i1 = 2; i1 <= 12; i1 = i1 + 1) sh_d[i1] <= sh_d[i1-1];
        neg_d <= {neg_d[11:1], a[31]};
        z2 <= (absa1 > zmax1) ? zmax1 : absa1;
        zs3 <= z2 >> {sh_d[2][4:3], 3'b000};
        f3 <= z2[25:0] & ((26'd1 << sh_d[2]) - 26'd1);
        idx4 <= zs_sh[9:0];
        f4 <= f3;
        lo5 <= sig_rom[{1'b0, idx4}];
        hi5 <= sig_rom[{1'b0, idx4} + 11'd1];
        f5 <= f4;
        f6 <= f5;
        lo_d[6] <= lo5;
        for (i1 = 7; i1 <= 12; i1 = i1 + 1) lo_d[i1] <= lo_d[i1-1];
    end
    reg  signed [33:0] dlt6;
    wire signed [67:0] ip9;
    always @(posedge clk) dlt6 <= $signed({13'd0, hi5}) - $signed({13'd0, lo5});
    mmf_mul #(.W(34)) m_interp (.clk(clk), .a(dlt6), .b($signed({8'd0, f6})), .p(ip9));
    reg  signed [63:0] r10, r11;
    reg  signed [63:0] sp12, sig13;
    reg         [63:0] half10;           // 2^(s-1) of the stage-10 shift, registered a stage ahead
    always @(posedge clk) begin
        half10 <= (sh_d[8] == 5'd0) ? 64'd0 : (64'd1 << (sh_d[8] - 5'd1));
        r10 <= ip9[63:0] + $signed(half10);
        r11 <= r10 >>> {sh_d[10][4:3], 3'b000};
        sp12 <= $signed({43'd0, lo_d[11]}) + (r11 >>> sh_d[11][2:0]);
        sig13 <= neg_d[12] ? ONE_G - sp12 : sp12;
    end

    // ---- the products: s14 operands, s15-s17 M1 (a·s, b·(1-s) or a·b) and M2 (b·c)
    reg  signed [33:0] m1a, m1b, m2a, m2b;
    wire signed [67:0] p1, p2;
    reg  signed [63:0] sig_d [14:20];
    always @(posedge clk) begin
        m1a <= (op_d[13] == 3'd2) ? {{2{b_d[13][31]}}, b_d[13]} : {{2{a_d[13][31]}}, a_d[13]};
        m1b <= (op_d[13] == 3'd2) ? ONE_G[33:0] - sig13[33:0] :
               (op_d[13] == 3'd5) ? {{2{b_d[13][31]}}, b_d[13]} : sig13[33:0];
        m2a <= {{2{b_d[13][31]}}, b_d[13]};
        m2b <= {{2{cf_d[13][31]}}, cf_d[13]};
        sig_d[14] <= sig13;
        for (i4 = 15; i4 <= 20; i4 = i4 + 1) sig_d[i4] <= sig_d[i4-1];
    end
    mmf_mul #(.W(34)) m_1 (.clk(clk), .a(m1a), .b(m1b), .p(p1));
    mmf_mul #(.W(34)) m_2 (.clk(clk), .a(m2a), .b(m2b), .p(p2));

    // ---- s18-s20 rounded shifts (20, or c for REQUANT), s20 the sum for ADD. The shift is chosen
    // in s16 and its rounding term 2^(s-1) made in s17, so s18 is only the add.
    reg  [5:0]  sh16, sh17, sh18r;
    reg  [2:0]  sh19r;
    reg  [63:0] half17;
    reg  signed [63:0] h18, h19, v20, q18, q19, q_d [20:25], add20;
    always @(posedge clk) begin
        sh16 <= (op_d[15] == 3'd5) ? c_d[15] : 6'd20;
        sh17 <= sh16;
        half17 <= (sh16 == 6'd0) ? 64'd0 : (64'd1 << (sh16 - 6'd1));
        h18 <= p1[63:0] + $signed(half17);
        q18 <= p2[63:0] + 64'sd524288;
        sh18r <= sh17;
        h19 <= h18 >>> {sh18r[5:3], 3'b000};
        q19 <= q18 >>> 20;
        sh19r <= sh18r[2:0];
        v20 <= h19 >>> sh19r;
        add20 <= {{32{a_d[19][31]}}, a_d[19]} + {{32{b_d[19][31]}}, b_d[19]};
        q_d[20] <= q19;
        for (i5 = 21; i5 <= 25; i5 = i5 + 1) q_d[i5] <= q_d[i5-1];
    end

    // ---- s21 per-op result and the RECUR input-gate operands, s22-s24 M3, s25 its rounding
    reg  signed [63:0] res_d [21:26];
    reg  signed [33:0] m3a, m3b;
    wire signed [67:0] p3;
    reg  signed [63:0] ig25, sum26;
    always @(posedge clk) begin
        case (op_d[20])
            3'd0:    res_d[21] <= sig_d[20];
            3'd2:    res_d[21] <= sig_d[20] + v20;
            3'd4:    res_d[21] <= add20;
            default: res_d[21] <= v20;
        endcase
        m3a <= v20[33:0];
        m3b <= ONE_G[33:0] - {{2{b_d[20][31]}}, b_d[20]};
        for (i6 = 22; i6 <= 26; i6 = i6 + 1) res_d[i6] <= res_d[i6-1];
        ig25 <= ($signed(p3[63:0]) + 64'sd32768) >>> 16;
        sum26 <= q_d[25] + ig25;
    end
    mmf_mul #(.W(34)) m_3 (.clk(clk), .a(m3a), .b(m3b), .p(p3));

    // ---- s27 output: saturation
    function signed [31:0] sat32;
        input signed [63:0] x;
        begin
            if (x > I32_MAX) sat32 = I32_MAX[31:0];
            else if (x < I32_MIN) sat32 = I32_MIN[31:0];
            else sat32 = x[31:0];
        end
    endfunction
    always @(posedge clk) begin
        case (op_d[26])
            3'd3:             y <= sat32(sum26);
            3'd0, 3'd1, 3'd2: y <= res_d[26][31:0];
            default:          y <= sat32(res_d[26]);
        endcase
    end

    reg [LAT-1:1] v;
    always @(posedge clk) begin
        if (rst) v <= 0;
        else v <= {v[LAT-2:1], in_valid};
        out_valid <= rst ? 1'b0 : v[LAT-1];
    end
    wire _unused_ok = &{1'b0, p1[67:64], p2[67:64], p3[67:64], ip9[67:64], zs_sh[32:10], 1'b0};
endmodule
`default_nettype wire
