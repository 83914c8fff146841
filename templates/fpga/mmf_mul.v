`default_nettype none
// Pipelined signed multiplier for wide operands: p = a·b three cycles after a and b are presented.
//
// Each operand is split into a low 17-bit unsigned half and a high signed half, so the four
// partial products each fit one 18×18 DSP multiplier (MULT18X18D on ECP5). The partial products
// are registered (yosys does not absorb pipeline registers into ECP5 multipliers, so a wide
// product written as one `*` would be a single long combinational path through several DSPs and
// their adders), then summed in two registered steps: lo·lo and hi·hi do not overlap and are
// concatenated, the two xsum terms are added, and one final add aligns the xsum sum.
module mmf_mul #(
    parameter W = 34   // operand width, 19..35 (two halves of at most 18 signed bits)
) (
    input  wire                  clk,
    input  wire signed [W-1:0]   a,
    input  wire signed [W-1:0]   b,
    output reg  signed [2*W-1:0] p
);
    localparam H = W - 17;   // width of the high (signed) half
    initial begin
        if (W < 19 || W > 35) begin
            $display("mmf_mul: W=%0d must be 19..35", W);
            $finish;
        end
    end
    wire signed [17:0]  a_lo = {1'b0, a[16:0]};
    wire signed [17:0]  b_lo = {1'b0, b[16:0]};
    wire signed [H-1:0] a_hi = a[W-1:17];
    wire signed [H-1:0] b_hi = b[W-1:17];

    // stage 1: the four partial products
    reg         [33:0]      ll;          // < 2^34, unsigned
    reg  signed [2*H-1:0]   hh;
    reg  signed [H+17:0]    lh, hl;
    wire signed [35:0]      ll_w = a_lo * b_lo;
    wire _unused_ok = &{1'b0, ll_w[35:34], 1'b0};
    always @(posedge clk) begin
        ll <= ll_w[33:0];
        hh <= a_hi * b_hi;
        lh <= a_lo * b_hi;
        hl <= a_hi * b_lo;
    end

    // stage 2: lo·lo and hi·hi side by side (no overlap), the xsum terms added
    reg  signed [2*W-1:0]   osum;
    reg  signed [H+18:0]    xsum;
    always @(posedge clk) begin
        osum <= {hh, ll};
        xsum <= {lh[H+17], lh} + {hl[H+17], hl};
    end

    // stage 3: align the xsum sum (weight 2^17)
    wire signed [2*W-1:0] xsum_w = {{(2*W-H-19-17){xsum[H+18]}}, xsum, 17'd0};
    always @(posedge clk) p <= osum + xsum_w;
endmodule
`default_nettype wire
