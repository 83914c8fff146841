`default_nettype none
// Scalar unit: the per-vector registers of the integer spec and the steps between passes
// (see hardware/isa.py): rsqrt by table (intref.rsqrt_fixed), the quantiser's reciprocal by
// restoring division, the requantisation multiplier (intref.output_multiplier) and the RMSNorm eps
// term (intref.eps_term). Multi-cycle; `busy` is high until the command's results are written.
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
    input  wire               cmd,
    input  wire [3:0]         sub,
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

    localparam S_IDLE = 3'd0, S_RSQ1 = 3'd1, S_RSQ2 = 3'd2, S_DIV = 3'd3, S_OUT2 = 3'd4,
               S_EPS2 = 3'd5, S_EPS3 = 3'd6, S_DIVUP = 3'd7;
    localparam signed [63:0] EPS_MAX = 64'sd1 << 56;
    localparam signed [15:0] EPS_S16 = EPS_S;

    reg [16:0] rsqrt_rom [0:384];
    initial $readmemh(RSQRT_HEX, rsqrt_rom);

    reg        [2:0]  state;
    reg        [31:0] amax;
    reg        [63:0] ss, z;
    reg signed [7:0]  kq, e;
    reg        [16:0] r;
    reg signed [15:0] p;
    assign busy = (state != S_IDLE) | cmd;

    // rsqrt: e even, t = S >> e in [2^14, 2^16), idx = (t >> 7) - 128
    wire        [6:0]  ss_bits = mmf_bitlen(ss);
    wire signed [7:0]  e_raw   = $signed({1'b0, ss_bits}) - 8'sd15;
    wire signed [7:0]  e_new   = (ss == 64'd0) ? 8'sd0 : ((e_raw >>> 1) <<< 1);
    wire        [63:0] t_new   = e_new[7] ? (ss << (-e_new)) : (ss >> e_new);
    wire        [63:0] i_raw   = (t_new >> 7) - 64'd128;
    wire        [8:0]  idx_new = (t_new < 64'd16384) ? 9'd0 : (i_raw > 64'd383) ? 9'd383 : i_raw[8:0];
    reg         [6:0]  t_frac;
    wire signed [63:0] r_new = $signed({47'd0, lo}) + mmf_rsr(($signed({47'd0, hi}) - $signed({47'd0, lo}))
                                                             * $signed({57'd0, t_frac}), 8'sd7);
    reg         [16:0] lo, hi;
    reg                rsq_zero;

    // division 127·2^32 / amax, one quotient bit a cycle from the top, then rounded up (S_DIVUP) as
    // intref.quantize_int8 specifies: a ceiling reciprocal makes exact ties round away from zero
    localparam [38:0] DIVIDEND = {7'd127, 32'd0};
    reg [5:0]  div_i;
    reg [38:0] rem;
    wire [39:0] rem_sh = {rem, DIVIDEND[div_i]};

    // output multiplier
    wire signed [63:0] pp   = mmf_rsr($signed({32'd0, amax}) * $signed({47'd0, r}), 8'sd8);
    wire signed [15:0] e16  = {{8{e[7]}}, e};
    wire signed [15:0] kq16 = {{8{kq[7]}}, kq};
    wire signed [15:0] me_w = $signed({1'b0, bimm[14:0]}) + 16'sd23 + (e16 >>> 1) - kq16 - 16'sd32;
    wire signed [63:0] mm_full = mmf_rsr($signed({33'd0, imm[30:0]}) * pp, 8'sd24);

    // eps term: b = max(bitlen(z) - 31, 0); prod = EPS_M·(z >> b); shift = EPS_S - b + 2p
    wire        [6:0]  z_bits = mmf_bitlen(z);
    wire        [6:0]  b_cut  = (z_bits > 7'd31) ? z_bits - 7'd31 : 7'd0;
    reg         [63:0] eps_prod;
    reg  signed [15:0] eps_shift;
    wire        [6:0]  prod_bits = mmf_bitlen(eps_prod);
    wire               too_big = (eps_shift <= 0) &&
                                 ($signed({9'd0, prod_bits}) - eps_shift > 16'sd56);
    wire signed [15:0] sh_cl  = (eps_shift < -16'sd56) ? -16'sd56 : eps_shift;
    wire signed [63:0] exact  = (eps_shift >= 16'sd64) ? 64'sd0 : mmf_rsr(eps_prod, sh_cl[7:0]);
    wire signed [63:0] eps_e  = too_big ? EPS_MAX : (exact > EPS_MAX ? EPS_MAX : exact);
    wire        [39:0] amax_w = {8'd0, amax};
    wire _unused_ok = &{1'b0, bimm[15], sh_cl[15:8], rem_sh[39], r_new[63:17], mm_full[63:31], 1'b0};

    always @(posedge clk) begin
        if (rst) begin
            state <= S_IDLE;
            k <= 0; kq <= 0; e <= 0; r <= 0; p <= 0;
            amax <= 0; ss <= 0; z <= 0;
            recip <= 0; mm <= 0; me <= 6'd1;
        end else begin
            if (pass_end && pass_op != 2'd3) begin
                k <= mmf_kfn(pass_top);
                if (pass_op != 2'd0) begin
                    ss <= pass_ss;
                    kq <= k;
                    amax <= pass_top;
                end
            end
            case (state)
                S_IDLE: if (cmd) case (sub)
                    4'd0: begin                          // RSQRT
                        e <= e_new;
                        t_frac <= t_new[6:0];
                        rsq_zero <= (ss == 64'd0);
                        lo <= rsqrt_rom[idx_new];
                        hi <= rsqrt_rom[idx_new + 9'd1];
                        state <= S_RSQ1;
                    end
                    4'd1: begin                          // RECIP
                        rem <= 39'd0;
                        recip <= 40'd0;
                        div_i <= 6'd38;
                        state <= S_DIV;
                    end
                    4'd2: state <= S_OUT2;               // OUTMUL
                    4'd3: p <= imm[15:0];                // PSET
                    4'd4: p <= p + {{8{kq[7]}}, kq};     // PADDK
                    4'd5: z <= ss;                       // ZSAVE
                    4'd6: z <= {32'd0, imm};             // ZSET
                    default: begin                       // EPS
                        eps_prod <= {33'd0, EPS_M} * (z >> b_cut);
                        eps_shift <= EPS_S16 - $signed({9'd0, b_cut}) + (p <<< 1);
                        state <= S_EPS2;
                    end
                endcase
                S_RSQ1: state <= S_RSQ2;
                S_RSQ2: begin
                    r <= rsq_zero ? 17'd0 : r_new[16:0];
                    state <= S_IDLE;
                end
                S_DIV: begin
                    if (amax != 32'd0 && rem_sh >= amax_w) begin
                        rem <= rem_sh[38:0] - amax_w[38:0];
                        recip[div_i] <= 1'b1;
                    end else begin
                        rem <= rem_sh[38:0];
                    end
                    if (div_i == 6'd0) state <= S_DIVUP;
                    else div_i <= div_i - 6'd1;
                end
                S_DIVUP: begin
                    if (amax != 32'd0 && rem != 39'd0) recip <= recip + 40'd1;
                    state <= S_IDLE;
                end
                S_OUT2: begin
                    mm <= mm_full[30:0];
                    me <= (me_w < 16'sd1) ? 6'd1 : (me_w > 16'sd62) ? 6'd62 : me_w[5:0];
                    state <= S_IDLE;
                end
                S_EPS2: state <= S_EPS3;
                S_EPS3: begin
                    ss <= ss + eps_e;
                    state <= S_IDLE;
                end
                default: state <= S_IDLE;
            endcase
        end
    end
endmodule
`default_nettype wire
