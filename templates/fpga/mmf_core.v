`default_nettype none
// The mmfree token-generation core: an instruction sequencer (isa.py) that fetches its program from
// card memory and drives the ternary matrix-vector unit, the row-wise unit, the normalisation unit,
// the scalar unit, the scratch memory and load/store to card memory.
//
// The scratch is one block RAM with a read port and a write port (mmf_scratch, two-cycle reads).
// A pass reads an element's operands one a cycle into operand registers (a, then b, then c: one
// to three cycles an element, by op) and hands them to the unit, whose results go back through the
// write port. Dispatch is registered: the memory address (base + imm) and the burst lengths
// (rows·words for MATVEC) are computed in ST_DEC, a cycle before ST_NEXT issues them.
//
// Card memory is reached through a simple port (commands of N beats of MEM_W bits, in order;
// single-beat writes with byte strobes) that mmf_axi_master turns into AXI4.
module mmf_core #(
    parameter LANES     = 16,              // matrix-vector lanes; MEM_W = 2·LANES
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
    localparam IBUF_W = IBEATS * MEM_W;
    localparam SLOT   = IBUF_W / 8;                     // bytes per instruction slot
    localparam LOG_L  = (LANES == 16) ? 4 : (LANES == 32) ? 5 : (LANES == 64) ? 6 :
                        (LANES == 128) ? 7 : 8;
    localparam LOG_E  = (EPW == 1) ? 0 : (EPW == 2) ? 1 : (EPW == 4) ? 2 : (EPW == 8) ? 3 : 4;
    localparam [LOG_E:0] EPW_C = EPW[LOG_E:0];
    localparam [7:0]     IB_LAST = IBEATS[7:0] - 8'd1;

    initial begin
        if (LANES != 16 && LANES != 32 && LANES != 64 && LANES != 128 && LANES != 256) begin
            $display("mmf_core: LANES=%0d must be 16, 32, 64, 128 or 256 (MEM_W 32..512)", LANES);
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

    localparam ST_IDLE = 4'd0, ST_FETCH = 4'd1, ST_FDATA = 4'd2, ST_EXEC = 4'd3, ST_LOAD = 4'd4,
               ST_STORE = 4'd5, ST_MATVEC = 4'd6, ST_PASS = 4'd7, ST_DRAIN = 4'd8,
               ST_SCALAR = 4'd9, ST_END = 4'd10, ST_NEXT = 4'd11, ST_DEC = 4'd12;
    localparam OP_END = 4'd0, OP_LOAD = 4'd1, OP_STORE = 4'd2, OP_MATVEC = 4'd3, OP_ROW = 4'd4,
               OP_NORM = 4'd5, OP_SCALAR = 4'd6;

    reg [3:0]   state;
    reg [31:0]  pc;
    reg [127:0] ir;
    reg [IBUF_W-1:0] ibuf;
    reg [7:0]   ibeat;
    assign busy = (state != ST_IDLE);
    // instruction words arrive low beat first
    wire [IBUF_W-1:0] ibuf_next;
    generate
        if (IBEATS == 1) begin : one_beat
            assign ibuf_next = rd_data;
        end else begin : multi_beat
            assign ibuf_next = {rd_data, ibuf[IBUF_W-1:MEM_W]};
        end
    endgenerate

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

    // ---- scratch: one read port, one write port
    reg                we;
    reg  [SADDR_W-1:0] waddr;
    reg  [31:0]        wdata;
    reg  [SADDR_W-1:0] ra;
    wire [31:0]        da;
    mmf_scratch #(.ADDR_W(SADDR_W)) scr (.clk(clk), .we(we), .waddr(waddr), .wdata(wdata), .raddr(ra), .rdata(da));
    // operand registers of a pass, filled from the read port one operand a cycle
    reg  [31:0]        opa, opb, opc;
    reg  [1:0]         ph;                       // operand being read for element i_cnt
    reg  [2:0]         rtag0, rtag1, rtag2;      // {valid, operand} of the read in flight
    reg                rlast0, rlast1, rlast2;   // ... and it is the element's last operand

    // ---- units
    reg                tmv_start;
    wire               tmv_busy, tmv_w_ready, tmv_r_we;
    wire [SADDR_W-1:0] tmv_r_addr;
    wire [31:0]        tmv_r_data, tmv_active, tmv_window;
    reg                x_we;
    reg  [XADDR_W-1:0] x_waddr;
    reg  [8*LANES-1:0] x_wdata;
    mmf_tmv #(.LANES(LANES), .XADDR_W(XADDR_W), .SADDR_W(SADDR_W), .ROW_W(16)) tmv (
        .clk(clk), .rst(rst), .start(tmv_start), .words_per_row(f_a[XADDR_W:0]), .rows(n),
        .dst(f_dst[SADDR_W-1:0]), .busy(tmv_busy), .w_valid(rd_valid && state == ST_MATVEC),
        .w_ready(tmv_w_ready), .w_data(rd_data), .x_we(x_we), .x_waddr(x_waddr), .x_wdata(x_wdata),
        .r_we(tmv_r_we), .r_addr(tmv_r_addr), .r_data(tmv_r_data),
        .perf_active(tmv_active), .perf_window(tmv_window));

    reg                p_valid;                 // a pass element's operands are in opa/opb/opc
    wire               row_valid, norm_valid;
    wire signed [31:0] row_y, norm_d;
    wire signed [7:0]  norm_q;
    wire [31:0]        norm_top;
    wire [63:0]        norm_ss;
    wire signed [7:0]  sc_k;
    wire [39:0]        sc_recip;
    wire [30:0]        sc_mm;
    wire [5:0]         sc_me;
    wire               is_row = (op == OP_ROW);
    wire               requant = is_row && sub == 4'd5;
    // operands an element reads: RECUR a, b, c; FGATE, ADD, NORM16MUL a, b; the rest a
    wire [1:0]         nops = (is_row && sub == 4'd3) ? 2'd3 :
                              ((is_row && (sub == 4'd2 || sub == 4'd4)) || (!is_row && sub == 4'd2)) ? 2'd2 : 2'd1;
    mmf_rowwise #(.SIGMOID_HEX(SIGMOID_HEX)) row (
        .clk(clk), .rst(rst), .in_valid(p_valid && is_row), .op(sub[2:0]), .frac(frac),
        .a(opa), .b(requant ? {1'b0, sc_mm} : opb), .c(requant ? {26'd0, sc_me} : opc),
        .out_valid(row_valid), .y(row_y));
    reg norm_clear, pass_end, sc_cmd;
    mmf_norm norm (
        .clk(clk), .rst(rst), .clear(norm_clear), .in_valid(p_valid && !is_row), .op(sub[1:0]),
        .a(opa), .b(opb), .k(sc_k), .recip(sc_recip), .out_valid(norm_valid), .d(norm_d),
        .q(norm_q), .top(norm_top), .ss(norm_ss));
    wire sc_busy;
    mmf_scalar #(.RSQRT_HEX(RSQRT_HEX), .EPS_M(EPS_M), .EPS_S(EPS_S)) scalar (
        .clk(clk), .rst(rst), .pass_end(pass_end), .pass_op(sub[1:0]), .pass_top(norm_top),
        .pass_ss(norm_ss), .cmd(sc_cmd), .sub(sub), .imm(imm), .bimm(f_b), .busy(sc_busy),
        .k(sc_k), .recip(sc_recip), .mm(sc_mm), .me(sc_me));

    // ---- sequencer state
    reg [15:0]       i_cnt, o_cnt;      // elements issued / completed in the current step
    reg [MEM_W-1:0]  ubuf;              // LOAD: word being unpacked
    reg [LOG_E:0]    ucnt;
    reg [2:0]        drain;
    reg              started;
    reg [LOG_E:0]    scnt;              // STORE: elements gathered into wr_data
    reg [2:0]        sphase;            // STORE: read / wait / wait / capture / write
    reg              err_mem;           // the run ends early: an AXI error response
    wire             out_v = is_row ? row_valid : norm_valid;
    wire [LOG_L-1:0] lane = o_cnt[LOG_L-1:0];
    reg  [8*LANES-1:0] xpack;
    wire [8*LANES-1:0] xpack_next = (xpack & ~({{(8*LANES-8){1'b0}}, 8'hFF} << {lane, 3'b000})) |
                                    ({{(8*LANES-8){1'b0}}, norm_q} << {lane, 3'b000});

    // STORE: the next element enters at the top of the word (elements fill it low to high)
    wire [MEM_W+31:0]   wcat = {(i_cnt < n) ? da : 32'd0, wr_data};
    wire [LANES/4+3:0]  scat = {(i_cnt < n) ? 4'hF : 4'h0, wr_strb};
    wire [63:0]         pc64 = {32'd0, pc};
    wire [ADDR_W-1:0]   pc_ext = pc64[ADDR_W-1:0];
    wire _unused_ok = &{1'b0, ir[15], f_dst, f_c, f_a, wcat[31:0], scat[3:0], pc64, imm64, ibuf, 1'b0};
    wire [15:0] op_base = (ph == 2'd0) ? f_a : (ph == 2'd1) ? f_b : f_c;
    wire _unused_base = &{1'b0, op_base, 1'b0};   // only its low SADDR_W bits address the scratch

    assign rd_ready = (state == ST_FDATA) || (state == ST_LOAD && ucnt == 0) ||
                      (state == ST_MATVEC && tmv_w_ready);

    always @(posedge clk) begin
        we <= 1'b0;
        x_we <= 1'b0;
        tmv_start <= 1'b0;
        norm_clear <= 1'b0;
        pass_end <= 1'b0;
        sc_cmd <= 1'b0;
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
        if (rtag2[2]) begin
            case (rtag2[1:0])
                2'd0:    opa <= da;
                2'd1:    opb <= da;
                default: opc <= da;
            endcase
            p_valid <= rlast2;
        end
        if (rd_cmd_valid && rd_cmd_ready) rd_cmd_valid <= 1'b0;
        if (wr_valid && wr_ready) wr_valid <= 1'b0;
        if (state != ST_IDLE) perf_cycles <= perf_cycles + 1'b1;
        if (rst) begin
            state <= ST_IDLE;
            rd_cmd_valid <= 1'b0;
            wr_valid <= 1'b0;
            error_pc <= 32'd0;
            perf_cycles <= 32'd0;
            perf_tmv_active <= 32'd0;
            perf_tmv_window <= 32'd0;
            perf_instret <= 32'd0;
        end else case (state)
            ST_IDLE: if (start) begin
                pc <= 32'd0;
                err_mem <= 1'b0;
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
            end else begin
                rd_cmd_valid <= 1'b1;
                rd_cmd_addr <= base_prog + pc_ext;
                rd_cmd_beats <= IBEATS;
                ibeat <= 8'd0;
                state <= ST_FDATA;
            end
            ST_FDATA: if (rd_valid) begin
                ibuf <= ibuf_next;
                ibeat <= ibeat + 8'd1;
                if (ibeat == IB_LAST) state <= ST_EXEC;
            end
            ST_EXEC: begin
                ir <= ibuf[127:0];
                state <= ST_DEC;         // ST_DEC computes addresses and lengths from ir
            end
            ST_DEC: begin
                maddr <= base + imm_ext;
                mv_beats <= {16'd0, n} * {16'd0, f_a};
                ld_beats <= ({16'd0, n} + EPW - 1) >> LOG_E;
                state <= ST_NEXT;        // ST_NEXT dispatches on ir and these
            end
            default: ;
        endcase
        if (!rst) case (state)
            ST_NEXT: begin
                i_cnt <= 16'd0;
                o_cnt <= 16'd0;
                ucnt <= 0;
                scnt <= 0;
                sphase <= 3'd0;
                ph <= 2'd0;
                started <= 1'b0;
                drain <= 3'd0;
                case (op)
                    OP_END: state <= ST_END;
                    OP_LOAD: begin
                        rd_cmd_valid <= 1'b1;
                        rd_cmd_addr <= maddr;
                        rd_cmd_beats <= ld_beats;
                        state <= (n == 16'd0) ? ST_FETCH : ST_LOAD;
                    end
                    OP_STORE: begin
                        wr_addr <= maddr;
                        wr_strb <= 0;
                        state <= (n == 16'd0) ? ST_FETCH : ST_STORE;
                    end
                    OP_MATVEC: begin
                        rd_cmd_valid <= 1'b1;
                        rd_cmd_addr <= maddr;
                        rd_cmd_beats <= mv_beats;
                        tmv_start <= 1'b1;
                        state <= ST_MATVEC;
                    end
                    OP_ROW, OP_NORM: begin
                        norm_clear <= 1'b1;
                        state <= (n == 16'd0) ? ST_FETCH : ST_PASS;
                    end
                    OP_SCALAR: begin
                        sc_cmd <= 1'b1;
                        state <= ST_SCALAR;
                    end
                    default: begin               // an illegal instruction: ERROR (and DONE)
                        error_pulse <= 1'b1;
                        done_pulse <= 1'b1;
                        error_pc <= pc - SLOT;
                        state <= ST_IDLE;
                    end
                endcase
                if (op <= OP_SCALAR) begin
                    perf_instret <= perf_instret + 1'b1;
                end
            end
            ST_LOAD: begin
                if (ucnt == 0 && rd_valid) begin
                    ubuf <= rd_data;
                    ucnt <= EPW_C;
                end else if (ucnt != 0) begin
                    if (o_cnt < n) begin
                        we <= 1'b1;
                        waddr <= f_dst[SADDR_W-1:0] + o_cnt[SADDR_W-1:0];
                        wdata <= ubuf[31:0];
                    end
                    ubuf <= ubuf >> 32;
                    ucnt <= ucnt - 1'b1;
                    o_cnt <= o_cnt + 16'd1;
                    if (ucnt == 1 && o_cnt + 16'd1 >= n) state <= ST_FETCH;
                end
            end
            ST_STORE: begin
                // one element at a time: read (phase 0), wait for the RAM (1), capture (2);
                // after EPW captures write the word (3) and move on
                case (sphase)
                    3'd0: begin
                        ra <= f_a[SADDR_W-1:0] + i_cnt[SADDR_W-1:0];
                        sphase <= 3'd1;
                    end
                    3'd1: sphase <= 3'd2;
                    3'd2: sphase <= 3'd3;
                    3'd3: begin
                        wr_data <= wcat[MEM_W+31:32];
                        wr_strb <= scat[LANES/4+3:4];
                        i_cnt <= i_cnt + 16'd1;
                        scnt <= scnt + 1'b1;
                        if (scnt == EPW_C - 1'b1) begin
                            wr_valid <= 1'b1;
                            sphase <= 3'd4;
                        end else begin
                            sphase <= 3'd0;
                        end
                    end
                    default: if (wr_valid && wr_ready) begin
                        wr_addr <= wr_addr + (MEM_W / 8);
                        scnt <= 0;
                        sphase <= 3'd0;
                        if (i_cnt >= n) state <= ST_FETCH;
                    end
                endcase
            end
            ST_MATVEC: begin
                started <= 1'b1;
                if (tmv_r_we) begin
                    we <= 1'b1;
                    waddr <= tmv_r_addr;
                    wdata <= tmv_r_data;
                end
                if (started && !tmv_busy && !rd_cmd_valid) begin
                    perf_tmv_active <= perf_tmv_active + tmv_active;
                    perf_tmv_window <= perf_tmv_window + tmv_window;
                    state <= ST_FETCH;
                end
            end
            ST_PASS: begin
                if (i_cnt < n) begin
                    ra <= op_base[SADDR_W-1:0] + i_cnt[SADDR_W-1:0];
                    rtag0 <= {1'b1, ph};
                    rlast0 <= (ph == nops - 2'd1);
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
                        we <= 1'b1;
                        waddr <= f_dst[SADDR_W-1:0] + o_cnt[SADDR_W-1:0];
                        wdata <= is_row ? row_y : norm_d;
                    end
                    if (!is_row && sub == 4'd3) begin
                        xpack <= xpack_next;
                        if ((&lane) || o_cnt == n - 16'd1) begin
                            x_we <= 1'b1;
                            x_waddr <= o_cnt[XADDR_W+LOG_L-1:LOG_L];
                        end
                    end
                    if (o_cnt == n - 16'd1) state <= ST_DRAIN;
                end
            end
            ST_DRAIN: begin
                drain <= drain + 3'd1;
                if (drain == 3'd1) begin
                    pass_end <= !is_row;
                    state <= ST_SCALAR;      // the scalar unit derives k from the pass: wait for it
                end
            end
            ST_SCALAR: if (!sc_busy && !pass_end && !sc_cmd) state <= ST_FETCH;
            ST_END: if (wr_idle && !wr_valid) begin
                done_pulse <= 1'b1;
                // a write response may carry an error: look once more now that all have come back
                if (err_mem || mem_error != 2'b00) begin
                    error_pulse <= 1'b1;
                    mem_error_pulse <= 1'b1;
                    if (!err_mem) error_pc <= pc - SLOT;
                end
                state <= ST_IDLE;
            end
            default: ;
        endcase
        if (!rst && state == ST_EXEC) pc <= pc + SLOT;
        // loaded every cycle (x_we alone says when it is written): no enable logic in front of
        // 8·LANES flip-flops (it was the critical path)
        x_wdata <= xpack_next;
    end
endmodule
`default_nettype wire
