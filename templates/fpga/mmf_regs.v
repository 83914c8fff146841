`default_nettype none
// AXI4-Lite register slave of the mmfree core. Offsets, fields and the host protocol are defined
// in src/mmfree_cli/hardware/regmap.py (the one source of truth; keep the two in step).
// Write address and data are accepted independently; one response per write, OKAY always.
// Reads are registered twice: the address is captured, the register selected a cycle later.
module mmf_regs #(
    parameter [31:0] DESIGN_ID = 32'h0,   // id of this build, compared by the host with the manifest
    parameter [31:0] CAPS      = 32'h0,   // LANES / SADDR_W / XADDR_W, packed as in regmap.py
    parameter        ADDR_W    = 32       // card address width used by the core (32..64)
) (
    input  wire              clk,
    input  wire              rst,
    // AXI4-Lite slave
    input  wire [11:0]       s_awaddr,
    input  wire              s_awvalid,
    output reg               s_awready,
    input  wire [31:0]       s_wdata,
    input  wire [3:0]        s_wstrb,
    input  wire              s_wvalid,
    output reg               s_wready,
    output reg  [1:0]        s_bresp,
    output reg               s_bvalid,
    input  wire              s_bready,
    input  wire [11:0]       s_araddr,
    input  wire              s_arvalid,
    output reg               s_arready,
    output reg  [31:0]       s_rdata,
    output reg  [1:0]        s_rresp,
    output reg               s_rvalid,
    input  wire              s_rready,
    // to / from the core
    output reg               start,
    output wire [ADDR_W-1:0] base_weights,
    output wire [ADDR_W-1:0] base_prog,
    output wire [ADDR_W-1:0] base_in,
    output wire [ADDR_W-1:0] base_out,
    output wire [ADDR_W-1:0] base_state,
    input  wire              busy,
    input  wire              done_pulse,
    input  wire              error_pulse,
    input  wire              mem_error_pulse,   // ... and the cause was an AXI error response
    input  wire [31:0]       error_pc,
    input  wire [31:0]       perf_cycles,
    input  wire [31:0]       perf_tmv_active,
    input  wire [31:0]       perf_tmv_window,
    input  wire [31:0]       perf_instret,
    output wire              irq
);
    localparam [31:0] MAGIC   = 32'h4D4D4631;
    localparam [31:0] VERSION = 32'h0001_0000;

    initial begin
        if (ADDR_W < 32 || ADDR_W > 64) begin
            $display("mmf_regs: ADDR_W=%0d must be 32..64", ADDR_W);
            $finish;
        end
    end

    reg [31:0] addr_reg [0:9];   // WEIGHTS, PROG, IN, OUT, STATE: lo, hi pairs from 0x020
    reg        irq_en, done, error, mem_error;
    wire [63:0] w64 = {addr_reg[1], addr_reg[0]};
    wire [63:0] p64 = {addr_reg[3], addr_reg[2]};
    wire [63:0] i64 = {addr_reg[5], addr_reg[4]};
    wire [63:0] o64 = {addr_reg[7], addr_reg[6]};
    wire [63:0] s64 = {addr_reg[9], addr_reg[8]};
    assign base_weights = w64[ADDR_W-1:0];
    assign base_prog    = p64[ADDR_W-1:0];
    assign base_in      = i64[ADDR_W-1:0];
    assign base_out     = o64[ADDR_W-1:0];
    assign base_state   = s64[ADDR_W-1:0];
    assign irq = done & irq_en;

    // ---- writes
    reg [11:0] awaddr;
    reg        have_aw, have_w;
    reg [31:0] wdata;
    wire [9:0] aw_idx = awaddr[11:2] - 10'd8;
    integer k;
    always @(posedge clk) begin
        start <= 1'b0;
        if (rst) begin
            s_awready <= 1'b0;
            s_wready <= 1'b0;
            s_bvalid <= 1'b0;
            s_bresp <= 2'b00;
            have_aw <= 1'b0;
            have_w <= 1'b0;
            irq_en <= 1'b0;
            done <= 1'b0;
            error <= 1'b0;
            mem_error <= 1'b0;
            for (k = 0; k < 10; k = k + 1) addr_reg[k] <= 32'h0;
        end else begin
            if (done_pulse) done <= 1'b1;
            if (error_pulse) error <= 1'b1;
            if (mem_error_pulse) mem_error <= 1'b1;
            s_awready <= !have_aw && !s_awready;
            s_wready <= !have_w && !s_wready;
            if (s_awvalid && s_awready) begin
                awaddr <= s_awaddr;
                have_aw <= 1'b1;
                s_awready <= 1'b0;
            end
            if (s_wvalid && s_wready) begin
                wdata <= s_wdata;
                have_w <= 1'b1;
                s_wready <= 1'b0;
            end
            if (have_aw && have_w && !s_bvalid) begin
                have_aw <= 1'b0;
                have_w <= 1'b0;
                s_bvalid <= 1'b1;
                case (awaddr[11:2])
                    10'h004: begin
                        irq_en <= wdata[1];
                        if (wdata[0] && !busy) start <= 1'b1;
                    end
                    10'h005: begin
                        if (wdata[1]) done <= 1'b0;
                        if (wdata[2]) error <= 1'b0;
                        if (wdata[3]) mem_error <= 1'b0;
                    end
                    default:
                        if (awaddr[11:2] >= 10'h008 && awaddr[11:2] <= 10'h011)
                            addr_reg[aw_idx[3:0]] <= wdata;
                endcase
            end
            if (s_bvalid && s_bready) s_bvalid <= 1'b0;
        end
    end

    // ---- reads
    reg  [11:0] araddr;
    reg         ar_pend;
    wire [9:0] ar_idx = araddr[11:2] - 10'd8;
    // byte strobes are ignored (registers are written whole); the low address bits are always 0
    wire _unused_ok = &{1'b0, s_wstrb, araddr[1:0], awaddr[1:0], aw_idx[9:4], ar_idx[9:4], 1'b0};
    reg [31:0] rd;
    always @(*) begin
        case (araddr[11:2])
            10'h000: rd = MAGIC;
            10'h001: rd = VERSION;
            10'h002: rd = DESIGN_ID;
            10'h003: rd = CAPS;
            10'h004: rd = {30'h0, irq_en, 1'b0};
            10'h005: rd = {28'h0, mem_error, error, done, busy};
            10'h006: rd = error_pc;
            10'h014: rd = perf_cycles;
            10'h015: rd = perf_tmv_active;
            10'h016: rd = perf_tmv_window;
            10'h017: rd = perf_instret;
            default: rd = (araddr[11:2] >= 10'h008 && araddr[11:2] <= 10'h011)
                          ? addr_reg[ar_idx[3:0]] : 32'h0;
        endcase
    end
    always @(posedge clk) begin
        if (rst) begin
            s_arready <= 1'b0;
            s_rvalid <= 1'b0;
            s_rresp <= 2'b00;
            s_rdata <= 32'h0;
            ar_pend <= 1'b0;
        end else begin
            s_arready <= !s_rvalid && !s_arready && !ar_pend;
            if (s_arvalid && s_arready) begin
                araddr <= s_araddr;
                ar_pend <= 1'b1;
                s_arready <= 1'b0;
            end
            if (ar_pend) begin
                s_rdata <= rd;
                s_rvalid <= 1'b1;
                ar_pend <= 1'b0;
            end
            if (s_rvalid && s_rready) s_rvalid <= 1'b0;
        end
    end
endmodule
`default_nettype wire
