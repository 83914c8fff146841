`default_nettype none
// The mmfree token-generation core: an instruction sequencer (isa.py) that prefetches its program
// from card memory and drives the ternary matrix-vector unit, VEC row-wise and VEC normalisation
// units, the scalar unit, the scratch memory and load/store to card memory.
//
// Throughput: element work moves VEC elements a cycle. The scratch is VEC banks (mmf_scratch: a
// read returns a row of VEC words, two-cycle reads); a pass reads a row's operands one a cycle
// (a, then b, then c) into operand registers and hands them to VEC copies of the units, whose
// results go back through the write port as one row; the normalisation units' reductions (max,
// sum of squares) are combined by a registered tree after the pass. LOAD and STORE move VEC
// elements a cycle. The compiler places every vector a pass, LOAD or STORE names on a multiple of
// VEC (compiler.VEC_MAX); the last row of a vector is masked.
//
// The program is straight-line, so it is prefetched: the sequencer pops instructions from an
// on-chip queue (IQ_D entries) that refills CHUNK instructions at a time whenever the read port is
// free and the queue has room; an instruction fetch never waits for the memory's latency unless
// the queue ran dry. Reads return in order, so each beat goes to the command it belongs to: the
// outstanding refill (at most one) or the current instruction's data (at most one command).
//
// Dispatch is registered: the memory address (base + imm), the burst lengths (rows·words for
// MATVEC) and the row count of a pass are computed in ST_DEC, a cycle before ST_NEXT issues them.
// Card memory is reached through a simple port (commands of N beats of MEM_W bits, in order;
// single-beat writes with byte strobes) that mmf_axi_master turns into AXI4.
module mmf_core #(
    parameter LANES     = 16,              // matrix-vector lanes; MEM_W = 2·LANES
    parameter VEC       = 1,               // elements a pass / LOAD / STORE moves a cycle: 1..LANES/16
    parameter SADDR_W   = 12,              // scratch: 2**SADDR_W int32 words (at most 16)
    parameter XADDR_W   = 6,               // x buffer: 2**XADDR_W entries of LANES int8
    parameter ADDR_W    = 32,              // card address width
    parameter RSQRT_HEX = "rsqrt.hex",     // table images written by the generator
    parameter SIGMOID_HEX = "sigmoid.hex",
    parameter [30:0] EPS_M = 31'd1125899907,
    parameter EPS_S     = 50
) (
    input  wire                  clk,
    input  wire                  rst,
    input  wire                  start,
    input  wire [ADDR_W-1:0]     base_weights,
    input  wire [ADDR_W-1:0]     base_prog,
    input  wire [ADDR_W-1:0]     base_in,
    input  wire [ADDR_W-1:0]     base_out,
    input  wire [ADDR_W-1:0]     base_state,
    output wire                  busy,
    output reg                   done_pulse,
    output reg                   error_pulse,
    output reg                   mem_error_pulse,
    output reg  [31:0]           error_pc,
    output reg  [31:0]           perf_cycles,
    output reg  [31:0]           perf_tmv_active,
    output reg  [31:0]           perf_tmv_window,
    output reg  [31:0]           perf_instret,
    // card memory port
    output reg                   rd_cmd_valid,
    input  wire                  rd_cmd_ready,
    output reg  [ADDR_W-1:0]     rd_cmd_addr,
    output reg  [31:0]           rd_cmd_beats,
    input  wire                  rd_valid,
    output wire                  rd_ready,
    input  wire [2*LANES-1:0]    rd_data,
    output reg                   wr_valid,
    input  wire                  wr_ready,
    output reg  [ADDR_W-1:0]     wr_addr,
    output reg  [2*LANES-1:0]    wr_data,
    output reg  [LANES/4-1:0]    wr_strb,
    input  wire                  wr_idle,
    input  wire [1:0]            mem_error      // sticky AXI error responses (read, write) this run
);
    localparam MEM_W  = 2 * LANES;
    localparam EPW    = MEM_W / 32;                     // int32 elements per memory word
    localparam IBEATS = (MEM_W >= 128) ? 1 : 128 / MEM_W; // beats per instruction
    localparam IBUF_W = (IBEATS == 1) ? 128 : IBEATS * MEM_W;
    localparam SLOT   = ((MEM_W >= 128) ? MEM_W : 128) / 8; // bytes per instruction slot
    localparam LOG_L  = (LANES == 16) ? 4 : (LANES == 32) ? 5 : (LANES == 64) ? 6 :
                        (LANES == 128) ? 7 : 8;
    localparam LOG_V  = (VEC == 1) ? 0 : (VEC == 2) ? 1 : (VEC == 4) ? 2 : (VEC == 8) ? 3 : 4;
    localparam RW     = SADDR_W - LOG_V;                // scratch row address width
    localparam CPW    = EPW / VEC;                      // scratch rows per memory word
    localparam LOG_X  = LOG_L - LOG_V;                  // rows per x-buffer entry, log2
    localparam IQ_D   = 16;                             // instruction queue entries
    localparam CHUNK  = 8;                              // instructions per refill
    localparam integer IF_BEATS_I = CHUNK * IBEATS;
    localparam [7:0]  IF_BEATS = IF_BEATS_I[7:0];
    localparam [7:0]  IB_LAST = IBEATS[7:0] - 8'd1;
    localparam [5:0]  CPW_C = CPW[5:0];
    localparam [15:0] VM16 = VEC - 1;
    localparam [SADDR_W-1:0] VMASK = VEC - 1;
    localparam [VEC-1:0] ONE_V = 1;
    localparam [VEC-1:0] ALL_V = {VEC{1'b1}};
    localparam [2:0]  DRAIN_LAST = LOG_V + 1;           // reductions through the tree
    localparam [16:0] VM17 = VEC - 1;
    localparam [16:0] CPW17 = CPW - 1;

    initial begin
        if (LANES != 16 && LANES != 32 && LANES != 64 && LANES != 128 && LANES != 256) begin
            $display("mmf_core: LANES=%0d must be 16, 32, 64, 128 or 256 (MEM_W 32..512)", LANES);
            $finish;
        end
        if ((VEC != 1 && VEC != 2 && VEC != 4 && VEC != 8 && VEC != 16) || VEC > EPW) begin
            $display("mmf_core: VEC=%0d must be a power of two <= LANES/16", VEC);
            $finish;
        end
        if (XADDR_W + LOG_L > 16) begin
            $display("mmf_core: K max = LANES << XADDR_W must be <= 65536");
            $finish;
        end
        if (SADDR_W > 16 || SADDR_W < 6) begin
            $display("mmf_core: SADDR_W=%0d must be 6..16 (16-bit scratch fields)", SADDR_W);
            $finish;
        end
    end

    localparam ST_IDLE = 4'd0, ST_FETCH = 4'd1, ST_LOAD = 4'd4, ST_STORE = 4'd5, ST_MATVEC = 4'd6,
               ST_PASS = 4'd7, ST_DRAIN = 4'd8, ST_SCALAR = 4'd9, ST_END = 4'd10, ST_NEXT = 4'd11,
               ST_DEC = 4'd12;
    localparam OP_END = 4'd0, OP_LOAD = 4'd1, OP_STORE = 4'd2, OP_MATVEC = 4'd3, OP_ROW = 4'd4,
               OP_NORM = 4'd5, OP_SCALAR = 4'd6;

    reg [3:0]   state;
    reg [31:0]  pc;                    // card offset of the instruction after the one in ir
    reg [127:0] ir;
    assign busy = (state != ST_IDLE);

    wire [3:0]  op   = ir[3:0];
    wire [3:0]  sub  = ir[7:4];
    wire [4:0]  frac = ir[12:8];
    wire [1:0]  bsel = ir[14:13];
    wire [15:0] n    = ir[31:16];
    wire [15:0] f_dst = ir[47:32];
    wire [15:0] f_a  = ir[63:48];
    wire [15:0] f_b  = ir[79:64];
    wire [15:0] f_c  = ir[95:80];
    wire [31:0] imm  = ir[127:96];
    wire [ADDR_W-1:0] base = (bsel == 2'd0) ? base_weights : (bsel == 2'd1) ? base_in :
                             (bsel == 2'd2) ? base_out : base_state;
    wire [63:0]       imm64 = {32'd0, imm};
    wire [ADDR_W-1:0] imm_ext = imm64[ADDR_W-1:0];
    reg  [ADDR_W-1:0] maddr;           // base + imm, registered in ST_DEC
    reg  [31:0]       mv_beats;        // MATVEC: rows·words_per_row, registered in ST_DEC
    reg  [31:0]       ld_beats;        // LOAD: words holding n elements
    reg  [15:0]       nrows;           // scratch rows holding n elements
    reg  [VEC-1:0]    tmask;           // elements of the last row that exist

    // ---- instruction queue and the read port's two owners (refills, the instruction's data)
    reg  [127:0]      iq [0:IQ_D-1];
    reg  [3:0]        iq_wp, iq_rp;
    reg  [4:0]        iq_cnt;
    reg  [31:0]       fpc;             // card offset of the next refill
    reg               saw_end;         // END is in the queue: no more refills
    reg  [7:0]        if_left;         // beats of the outstanding refill still to come
    reg  [31:0]       data_left;       // beats of the data command still to come
    reg               if_first;        // both outstanding: the refill's beats come first
    reg               if_busy, d_busy; // if_left != 0, data_left != 0, as registers (timing)
    reg               dreq;            // the instruction's data command, waiting for the port
    reg  [ADDR_W-1:0] dreq_addr;
    reg  [31:0]       dreq_beats;
    reg  [IBUF_W-1:0] ibuf;
    reg  [7:0]        ibeat;
    wire              route_if = if_busy && (!d_busy || if_first);
    wire              if_take  = rd_valid && route_if;
    wire              d_valid  = rd_valid && !route_if && d_busy;
    wire [IBUF_W-1:0] ibuf_next;
    generate
        if (IBEATS == 1) begin : one_beat
            assign ibuf_next = rd_data[127:0];
        end else begin : multi_beat     // instruction words arrive low beat first
            assign ibuf_next = {rd_data, ibuf[IBUF_W-1:MEM_W]};
        end
    endgenerate
    wire              if_push = if_take && (ibeat == IB_LAST);
    wire              if_pop  = (state == ST_FETCH) && (mem_error == 2'b00) && (iq_cnt != 5'd0);
    wire              want_if = (state != ST_IDLE) && (state != ST_END) && !saw_end &&
                                !if_busy && (iq_cnt <= IQ_D - CHUNK) && !dreq;
    wire [127:0]      iq_head = iq[iq_rp];
    // the next instruction's data read, issued early (while the current pass or scalar command,
    // which reads nothing from card memory, runs) so a LOAD or MATVEC seldom waits the whole latency: head -> pk_ir ->
    // address and length -> dreq. `pre` says the next instruction's read is on its way.
    reg               pre, pk1, pk2;
    reg  [127:0]      pk_ir;
    wire [3:0]        h_op = iq_head[3:0];
    wire              peek = (state == ST_PASS || state == ST_DRAIN || state == ST_SCALAR) && (iq_cnt != 5'd0) && !pre && !dreq && !d_busy &&
                             (h_op == OP_LOAD || h_op == OP_MATVEC);
    wire [1:0]        pk_bsel = pk_ir[14:13];
    wire [15:0]       pk_n = pk_ir[31:16];
    wire [63:0]       pk_imm64 = {32'd0, pk_ir[127:96]};
    wire [ADDR_W-1:0] pk_base = (pk_bsel == 2'd0) ? base_weights : (pk_bsel == 2'd1) ? base_in :
                                (pk_bsel == 2'd2) ? base_out : base_state;

    // ---- scratch: VEC banks, one read row and one (masked) write row a cycle
    reg  [VEC-1:0]     we;
    reg  [RW-1:0]      waddr;
    reg  [32*VEC-1:0]  wdata;
    reg  [RW-1:0]      ra;
    wire [32*VEC-1:0]  da;
    mmf_scratch #(.ADDR_W(SADDR_W), .V(VEC), .LOG_V(LOG_V)) scr (
        .clk(clk), .we(we), .waddr(waddr), .wdata(wdata), .raddr(ra), .rdata(da));
    // operand registers of a pass, filled from the read port one operand a cycle
    reg  [32*VEC-1:0]  opa, opb, opc;
    reg  [1:0]         ph;                       // operand being read for row i_cnt
    reg  [2:0]         rtag0, rtag1, rtag2;      // {valid, operand} of the read in flight
    reg                rlast0, rlast1, rlast2;   // ... and it is the row's last operand
    reg  [VEC-1:0]     rmask0, rmask1, rmask2;   // ... and the row's elements that exist
    reg  [VEC-1:0]     p_mask;

    // scratch rows of the instruction's vectors (the compiler aligns them to VEC)
    wire [15:0]        op_base = (ph == 2'd0) ? f_a : (ph == 2'd1) ? f_b : f_c;
    wire [SADDR_W-1:0] op_full = op_base[SADDR_W-1:0] >> LOG_V;
    wire [SADDR_W-1:0] dst_full = f_dst[SADDR_W-1:0] >> LOG_V;
    wire [RW-1:0]      op_row = op_full[RW-1:0];
    wire [RW-1:0]      dst_row = dst_full[RW-1:0];

    // ---- units
    reg                tmv_start;
    wire               tmv_busy, tmv_w_ready, tmv_r_we;
    wire [SADDR_W-1:0] tmv_r_addr;
    wire [31:0]        tmv_r_data, tmv_active, tmv_window;
    wire [SADDR_W-1:0] tmv_full = tmv_r_addr >> LOG_V;
    wire [SADDR_W-1:0] tmv_bank = tmv_r_addr & VMASK;
    reg                x_we;
    reg  [XADDR_W-1:0] x_waddr;
    reg  [8*LANES-1:0] x_wdata;
    mmf_tmv #(.LANES(LANES), .XADDR_W(XADDR_W), .SADDR_W(SADDR_W), .ROW_W(16)) tmv (
        .clk(clk), .rst(rst), .start(tmv_start), .words_per_row(f_a[XADDR_W:0]), .rows(n),
        .dst(f_dst[SADDR_W-1:0]), .busy(tmv_busy), .w_valid(d_valid && state == ST_MATVEC),
        .w_ready(tmv_w_ready), .w_data(rd_data), .x_we(x_we), .x_waddr(x_waddr), .x_wdata(x_wdata),
        .r_we(tmv_r_we), .r_addr(tmv_r_addr), .r_data(tmv_r_data),
        .perf_active(tmv_active), .perf_window(tmv_window));

    reg                p_valid;                 // a pass row's operands are in opa/opb/opc
    wire               is_row = (op == OP_ROW);
    wire               requant = is_row && sub == 4'd5;
    // operands an element reads: RECUR a, b, c; FGATE, ADD, NORM16MUL a, b; the rest a
    wire [1:0]         nops = (is_row && sub == 4'd3) ? 2'd3 :
                              ((is_row && (sub == 4'd2 || sub == 4'd4)) || (!is_row && sub == 4'd2)) ? 2'd2 : 2'd1;
    reg norm_clear, pass_end;
    reg [7:0] sc_go;                            // the SCALAR sub-op, one-hot (mmf_scalar)
    wire signed [7:0]  sc_k;
    wire [39:0]        sc_recip;
    wire [30:0]        sc_mm;
    wire [5:0]         sc_me;
    // the scalar unit's results registered once more on their way to the row and norm units: the
    // scalar's registers then sit by its control, the copies by their users (a pass reads them
    // cycles after ST_SCALAR sees the scalar unit idle, so the extra cycle is never seen)
    reg  signed [7:0]  sc_k_r;
    reg  [39:0]        sc_recip_r;
    reg  [30:0]        sc_mm_r;
    reg  [5:0]         sc_me_r;
    always @(posedge clk) begin
        sc_k_r <= sc_k;
        sc_recip_r <= sc_recip;
        sc_mm_r <= sc_mm;
        sc_me_r <= sc_me;
    end
    wire [VEC-1:0]     row_v, norm_v;
    wire [32*VEC-1:0]  row_y, norm_d;
    wire [8*VEC-1:0]   norm_q;
    wire [32*VEC-1:0]  norm_top;
    wire [64*VEC-1:0]  norm_ss;
    genvar j;
    generate
        for (j = 0; j < VEC; j = j + 1) begin : lane
            wire signed [31:0] y_j, d_j;
            wire signed [7:0]  q_j;
            wire [31:0]        top_j;
            wire [63:0]        ss_j;
            mmf_rowwise #(.SIGMOID_HEX(SIGMOID_HEX)) row (
                .clk(clk), .rst(rst), .in_valid(p_valid && is_row && p_mask[j]), .op(sub[2:0]),
                .frac(frac), .a(opa[32*j +: 32]), .b(requant ? {1'b0, sc_mm_r} : opb[32*j +: 32]),
                .c(requant ? {26'd0, sc_me_r} : opc[32*j +: 32]), .out_valid(row_v[j]), .y(y_j));
            mmf_norm norm (
                .clk(clk), .rst(rst), .clear(norm_clear), .in_valid(p_valid && !is_row && p_mask[j]),
                .op(sub[1:0]), .a(opa[32*j +: 32]), .b(opb[32*j +: 32]), .k(sc_k_r), .recip(sc_recip_r),
                .out_valid(norm_v[j]), .d(d_j), .q(q_j), .top(top_j), .ss(ss_j));
            assign row_y[32*j +: 32] = y_j;
            assign norm_d[32*j +: 32] = d_j;
            assign norm_q[8*j +: 8] = norm_v[j] ? q_j : 8'sd0;
            assign norm_top[32*j +: 32] = top_j;
            assign norm_ss[64*j +: 64] = ss_j;
        end
    endgenerate

    // the lanes' reductions, a registered tree (heap order: node t sums 2t+1 and 2t+2)
    reg  [31:0] red_top [0:2*VEC-2];
    reg  [63:0] red_ss  [0:2*VEC-2];
    integer t;
    always @(posedge clk) begin
        for (t = 0; t < VEC; t = t + 1) begin
            red_top[VEC-1+t] <= norm_top[32*t +: 32];
            red_ss[VEC-1+t] <= norm_ss[64*t +: 64];
        end
        for (t = 0; t < VEC - 1; t = t + 1) begin
            red_top[t] <= (red_top[2*t+1] > red_top[2*t+2]) ? red_top[2*t+1] : red_top[2*t+2];
            red_ss[t] <= red_ss[2*t+1] + red_ss[2*t+2];
        end
    end
    wire sc_busy;
    mmf_scalar #(.RSQRT_HEX(RSQRT_HEX), .EPS_M(EPS_M), .EPS_S(EPS_S)) scalar (
        .clk(clk), .rst(rst), .pass_end(pass_end), .pass_op(sub[1:0]), .pass_top(red_top[0]),
        .pass_ss(red_ss[0]), .go(sc_go), .imm(imm), .bimm(f_b), .busy(sc_busy),
        .k(sc_k), .recip(sc_recip), .mm(sc_mm), .me(sc_me));

    // ---- sequencer state
    reg [15:0]       i_cnt, o_cnt;      // rows issued / completed in the current step
    reg [MEM_W-1:0]  ubuf;              // LOAD: word being unpacked
    reg [5:0]        ucnt;              // ... rows of it left
    reg [2:0]        drain;
    reg              started;
    reg [5:0]        scnt;              // STORE: rows gathered into gbuf
    reg [5:0]        siss;              // STORE: rows of the word being gathered read so far
    reg [16:0]       srows;             // STORE: rows to read (nrows up to whole words)
    reg [ADDR_W-1:0] saddr;             // STORE: card address of the next word
    reg [MEM_W-1:0]  gbuf;              // STORE: the word being gathered ...
    reg [LANES/4-1:0] gstrb;            // ... and its strobes
    reg              err_mem;           // the run ends early: an AXI error response
    reg              err_ill;           // ... an illegal instruction
    wire [VEC-1:0]   row_mask = (i_cnt == nrows - 16'd1) ? tmask : ALL_V;
    wire             out_v = is_row ? row_v[0] : norm_v[0];      // lane 0 holds in every row
    wire [VEC-1:0]   out_mask = is_row ? row_v : norm_v;
    wire [LOG_X-1:0] xg = o_cnt[LOG_X-1:0];                       // the row's place in an x entry
    reg  [8*LANES-1:0] xpack;
    wire [8*LANES-1:0] xpack_next;
    generate
        for (j = 0; j < LANES / VEC; j = j + 1) begin : xchunk
            localparam [LOG_X-1:0] JX = j;
            assign xpack_next[8*VEC*j +: 8*VEC] = (xg == JX) ? norm_q : xpack[8*VEC*j +: 8*VEC];
        end
    endgenerate
    wire [MEM_W-1:0] ubuf_sh;
    generate
        if (CPW == 1) begin : whole_word
            assign ubuf_sh = ubuf;
        end else begin : part_word
            assign ubuf_sh = {{(32*VEC){1'b0}}, ubuf[MEM_W-1:32*VEC]};
        end
    endgenerate

    // STORE: the next row enters at the top of the word (rows fill it low to high)
    // STORE: rows are read back to back (the mask travels with the read); a gathered word waits
    // in gbuf until the write port takes the previous one, and the next word's reads start then
    wire [VEC-1:0]      s_mask = (i_cnt < nrows - 16'd1) ? ALL_V : (i_cnt == nrows - 16'd1) ? tmask : {VEC{1'b0}};
    wire                g_move = (scnt == CPW_C) && (!wr_valid || wr_ready);
    wire                s_issue = ({1'b0, i_cnt} < srows) && (siss != CPW_C || g_move);
    wire [32*VEC-1:0]   s_data;
    wire [4*VEC-1:0]    s_strb;
    generate
        for (j = 0; j < VEC; j = j + 1) begin : sgather
            assign s_data[32*j +: 32] = rmask2[j] ? da[32*j +: 32] : 32'd0;
            assign s_strb[4*j +: 4] = {4{rmask2[j]}};
        end
    endgenerate
    wire [MEM_W+32*VEC-1:0]   wcat = {s_data, gbuf};
    wire [LANES/4+4*VEC-1:0]  scat = {s_strb, gstrb};
    wire [63:0]         fpc64 = {32'd0, fpc};
    wire [ADDR_W-1:0]   fpc_ext = fpc64[ADDR_W-1:0];
    wire [16:0]         nrows_w = ({1'b0, n} + VM17) >> LOG_V;
    wire _unused_ok = &{1'b0, ir[15], f_dst, f_a, pk_ir[127:64], pk_ir[47:15], pk_ir[12:4], pk_imm64, wcat[32*VEC-1:0], scat[4*VEC-1:0], fpc64, imm64,
                        op_full, dst_full, tmv_full, tmv_bank, op_base, nrows_w[16], ibuf, 1'b0};

    // ST_END drops data an early read brought for an instruction an error stopped
    assign rd_ready = route_if || (state == ST_LOAD && ucnt <= 6'd1) || (state == ST_MATVEC && tmv_w_ready) ||
                      (state == ST_END);

    always @(posedge clk) begin
        we <= {VEC{1'b0}};
        x_we <= 1'b0;
        tmv_start <= 1'b0;
        norm_clear <= 1'b0;
        pass_end <= 1'b0;
        sc_go <= 8'd0;
        done_pulse <= 1'b0;
        error_pulse <= 1'b0;
        mem_error_pulse <= 1'b0;
        p_valid <= 1'b0;
        // pass operand reads: two cycles through the scratch, then into the operand registers
        rtag0 <= 3'd0;
        rtag1 <= rtag0;
        rtag2 <= rtag1;
        rlast1 <= rlast0;
        rlast2 <= rlast1;
        rmask1 <= rmask0;
        rmask2 <= rmask1;
        if (rtag2[2]) begin
            case (rtag2[1:0])
                2'd0:    opa <= da;
                2'd1:    opb <= da;
                default: opc <= da;
            endcase
            p_valid <= rlast2;
            p_mask <= rmask2;
        end
        if (wr_valid && wr_ready) wr_valid <= 1'b0;
        if (state != ST_IDLE) perf_cycles <= perf_cycles + 1'b1;

        // ---- the read port: the instruction's data first, else a refill when the queue has room
        if (rd_cmd_valid && rd_cmd_ready) rd_cmd_valid <= 1'b0;
        if (d_valid && rd_ready) begin
            data_left <= data_left - 32'd1;
            if (data_left == 32'd1) d_busy <= 1'b0;
        end
        if (if_take) begin
            if_left <= if_left - 8'd1;
            if (if_left == 8'd1) if_busy <= 1'b0;
            ibuf <= ibuf_next;
            ibeat <= (ibeat == IB_LAST) ? 8'd0 : ibeat + 8'd1;
        end
        if (if_push) begin
            iq[iq_wp] <= ibuf_next[127:0];
            iq_wp <= iq_wp + 4'd1;
            if (ibuf_next[3:0] == OP_END) saw_end <= 1'b1;
        end
        iq_cnt <= iq_cnt + (if_push ? 5'd1 : 5'd0) - (if_pop ? 5'd1 : 5'd0);
        pk1 <= peek;
        pk2 <= pk1;
        if (peek) begin
            pre <= 1'b1;
            pk_ir <= iq_head;
        end
        if (pk1) begin
            dreq_addr <= pk_base + pk_imm64[ADDR_W-1:0];
            dreq_beats <= (pk_ir[3:0] == OP_LOAD) ? ({16'd0, pk_n} + EPW - 1) / EPW
                                                  : {16'd0, pk_n} * {16'd0, pk_ir[63:48]};
        end
        if (pk2 && dreq_beats != 32'd0) dreq <= 1'b1;
        if (!rd_cmd_valid || rd_cmd_ready) begin
            if (dreq) begin
                rd_cmd_valid <= 1'b1;
                rd_cmd_addr <= dreq_addr;
                rd_cmd_beats <= dreq_beats;
                data_left <= dreq_beats;
                d_busy <= 1'b1;
                if_first <= if_busy;
                dreq <= 1'b0;
            end else if (want_if) begin
                rd_cmd_valid <= 1'b1;
                rd_cmd_addr <= base_prog + fpc_ext;
                rd_cmd_beats <= {24'd0, IF_BEATS};
                if_left <= IF_BEATS;
                if_busy <= 1'b1;
                if_first <= 1'b0;
                fpc <= fpc + CHUNK * SLOT;
            end
        end

        if (rst) begin
            state <= ST_IDLE;
            rd_cmd_valid <= 1'b0;
            wr_valid <= 1'b0;
            dreq <= 1'b0;
            pre <= 1'b0;
            pk1 <= 1'b0;
            pk2 <= 1'b0;
            if_left <= 8'd0;
            data_left <= 32'd0;
            if_busy <= 1'b0;
            d_busy <= 1'b0;
            ibeat <= 8'd0;
            iq_cnt <= 5'd0;
            error_pc <= 32'd0;
            perf_cycles <= 32'd0;
            perf_tmv_active <= 32'd0;
            perf_tmv_window <= 32'd0;
            perf_instret <= 32'd0;
        end else case (state)
            ST_IDLE: if (start) begin
                pc <= 32'd0;
                fpc <= 32'd0;
                saw_end <= 1'b0;
                iq_wp <= 4'd0;
                iq_rp <= 4'd0;
                iq_cnt <= 5'd0;
                ibeat <= 8'd0;
                pre <= 1'b0;
                err_mem <= 1'b0;
                err_ill <= 1'b0;
                perf_cycles <= 32'd0;
                perf_tmv_active <= 32'd0;
                perf_tmv_window <= 32'd0;
                perf_instret <= 32'd0;
                state <= ST_FETCH;
            end
            ST_FETCH: if (mem_error != 2'b00) begin
                // every read of the previous instruction has returned: stop here
                err_mem <= 1'b1;
                error_pc <= pc - SLOT;
                state <= ST_END;
            end else if (iq_cnt != 5'd0) begin
                ir <= iq_head;
                iq_rp <= iq_rp + 4'd1;
                pc <= pc + SLOT;
                state <= ST_DEC;         // ST_DEC computes addresses and lengths from ir
            end
            ST_DEC: begin
                maddr <= base + imm_ext;
                mv_beats <= {16'd0, n} * {16'd0, f_a};
                ld_beats <= ({16'd0, n} + EPW - 1) / EPW;
                nrows <= nrows_w[15:0];
                srows <= (nrows_w + CPW17) & ~CPW17;
                tmask <= ((n & VM16) == 16'd0) ? ALL_V : ~(ALL_V << (n & VM16));
                state <= ST_NEXT;        // ST_NEXT dispatches on ir and these
            end
            ST_NEXT: begin
                i_cnt <= 16'd0;
                o_cnt <= 16'd0;
                ucnt <= 6'd0;
                scnt <= 6'd0;
                siss <= 6'd0;
                saddr <= maddr;
                ph <= 2'd0;
                started <= 1'b0;
                drain <= 3'd0;
                pre <= 1'b0;
                case (op)
                    OP_END: state <= ST_END;
                    OP_LOAD: begin
                        if (!pre) begin
                            dreq <= (n != 16'd0);
                            dreq_addr <= maddr;
                            dreq_beats <= ld_beats;
                        end
                        state <= (n == 16'd0) ? ST_FETCH : ST_LOAD;
                    end
                    OP_STORE: begin
                        state <= (n == 16'd0) ? ST_FETCH : ST_STORE;
                    end
                    OP_MATVEC: begin
                        if (!pre) begin
                            dreq <= (mv_beats != 32'd0);
                            dreq_addr <= maddr;
                            dreq_beats <= mv_beats;
                        end
                        tmv_start <= 1'b1;
                        state <= ST_MATVEC;
                    end
                    OP_ROW, OP_NORM: begin
                        norm_clear <= 1'b1;
                        state <= (n == 16'd0) ? ST_FETCH : ST_PASS;
                    end
                    OP_SCALAR: begin
                        sc_go <= sub[3] ? 8'h80 : 8'd1 << sub[2:0];   // sub-ops 7.. are EPS
                        state <= ST_SCALAR;
                    end
                    default: begin               // an illegal instruction: ERROR (and DONE)
                        err_ill <= 1'b1;
                        error_pc <= pc - SLOT;
                        state <= ST_END;
                    end
                endcase
                if (op <= OP_SCALAR) begin
                    perf_instret <= perf_instret + 1'b1;
                end
            end
            ST_LOAD: begin
                // one row a cycle from the word in ubuf; the next word is taken as its last row goes
                if (ucnt != 6'd0) begin
                    we <= (o_cnt == nrows - 16'd1) ? tmask : ALL_V;
                    waddr <= dst_row + o_cnt[RW-1:0];
                    wdata <= ubuf[32*VEC-1:0];
                    ubuf <= ubuf_sh;
                    ucnt <= ucnt - 6'd1;
                    o_cnt <= o_cnt + 16'd1;
                    if (o_cnt == nrows - 16'd1) state <= ST_FETCH;
                end
                if (d_valid && ucnt <= 6'd1) begin
                    ubuf <= rd_data;
                    ucnt <= CPW_C;
                end
            end
            ST_STORE: begin
                if (s_issue) begin
                    ra <= op_row + i_cnt[RW-1:0];
                    rtag0 <= 3'b100;
                    rlast0 <= 1'b0;
                    rmask0 <= s_mask;
                    i_cnt <= i_cnt + 16'd1;
                    siss <= g_move ? 6'd1 : siss + 6'd1;
                end else if (g_move) begin
                    siss <= 6'd0;
                end
                if (rtag2[2]) begin                   // a row arrives: it enters at the top
                    gbuf <= wcat[MEM_W+32*VEC-1:32*VEC];
                    gstrb <= scat[LANES/4+4*VEC-1:4*VEC];
                    scnt <= scnt + 6'd1;
                end
                if (g_move) begin
                    wr_data <= gbuf;
                    wr_strb <= gstrb;
                    wr_addr <= saddr;
                    wr_valid <= 1'b1;
                    saddr <= saddr + (MEM_W / 8);
                    scnt <= 6'd0;
                    if ({1'b0, i_cnt} == srows) state <= ST_FETCH;
                end
            end
            ST_MATVEC: begin
                started <= 1'b1;
                if (tmv_r_we) begin
                    we <= ONE_V << tmv_bank;
                    waddr <= tmv_full[RW-1:0];
                    wdata <= {VEC{tmv_r_data}};
                end
                if (started && !tmv_busy && !dreq && !d_busy) begin
                    perf_tmv_active <= perf_tmv_active + tmv_active;
                    perf_tmv_window <= perf_tmv_window + tmv_window;
                    state <= ST_FETCH;
                end
            end
            ST_PASS: begin
                if (i_cnt < nrows) begin
                    ra <= op_row + i_cnt[RW-1:0];
                    rtag0 <= {1'b1, ph};
                    rlast0 <= (ph == nops - 2'd1);
                    rmask0 <= row_mask;
                    if (ph == nops - 2'd1) begin
                        ph <= 2'd0;
                        i_cnt <= i_cnt + 16'd1;
                    end else begin
                        ph <= ph + 2'd1;
                    end
                end
                if (out_v) begin
                    o_cnt <= o_cnt + 16'd1;
                    if (is_row || sub == 4'd1 || sub == 4'd2) begin
                        we <= out_mask;
                        waddr <= dst_row + o_cnt[RW-1:0];
                        wdata <= is_row ? row_y : norm_d;
                    end
                    if (!is_row && sub == 4'd3) begin
                        xpack <= xpack_next;
                        if ((&xg) || o_cnt == nrows - 16'd1) begin
                            x_we <= 1'b1;
                            x_waddr <= o_cnt[XADDR_W+LOG_X-1:LOG_X];
                        end
                    end
                    if (o_cnt == nrows - 16'd1) state <= ST_DRAIN;
                end
            end
            ST_DRAIN: begin
                drain <= drain + 3'd1;
                if (drain == DRAIN_LAST) begin
                    pass_end <= !is_row;
                    state <= ST_SCALAR;      // the scalar unit derives k from the pass: wait for it
                end
            end
            ST_SCALAR: if (!sc_busy && !pass_end && sc_go == 8'd0) state <= ST_FETCH;
            ST_END: if (wr_idle && !wr_valid && !if_busy && !rd_cmd_valid && !dreq && !d_busy && !pk1 && !pk2) begin
                // the last refill's beats are in, every write has its response (which may carry
                // an error: look once more now)
                done_pulse <= 1'b1;
                if (err_ill) error_pulse <= 1'b1;
                if (err_mem || mem_error != 2'b00) begin
                    error_pulse <= 1'b1;
                    mem_error_pulse <= 1'b1;
                    if (!err_mem && !err_ill) error_pc <= pc - SLOT;
                end
                state <= ST_IDLE;
            end
            default: ;
        endcase
        // loaded every cycle (x_we alone says when it is written): no enable logic in front of
        // 8·LANES flip-flops (it was the critical path)
        x_wdata <= xpack_next;
    end
endmodule
`default_nettype wire
