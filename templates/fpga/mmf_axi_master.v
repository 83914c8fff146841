`default_nettype none
// AXI4 master for the core's memory port. Reads: a command of N beats becomes INCR bursts of at
// most 256 beats that never cross a 4 KiB boundary, issued back to back (one ID, so data returns
// in order); R data reaches the core through a two-entry skid buffer, so RREADY and the core's
// rd_valid/rd_data are register outputs. Writes: single-beat bursts with byte strobes; `wr_idle`
// is high when every write has its response.
//
// Responses are checked: a read beat with RRESP = SLVERR/DECERR or a write response with BRESP =
// SLVERR/DECERR sets the sticky `mem_error` (bit 0 read, bit 1 write) until `err_clear`.
//
// Timing: the burst length (min of beats left, 256 and beats to the 4 KiB page end) is computed
// into a register one cycle before the address phase uses it, so no path runs from the remaining
// count through the comparisons into the next address.
module mmf_axi_master #(
    parameter DATA_W = 32,   // AXI data width = the core's MEM_W (32..512)
    parameter ADDR_W = 32    // AXI address width
) (
    input  wire                 clk,
    input  wire                 rst,
    // core side
    input  wire                 rd_cmd_valid,
    output wire                 rd_cmd_ready,
    input  wire [ADDR_W-1:0]    rd_cmd_addr,
    input  wire [31:0]          rd_cmd_beats,
    output wire                 rd_valid,
    input  wire                 rd_ready,
    output wire [DATA_W-1:0]    rd_data,
    input  wire                 wr_valid,
    output wire                 wr_ready,
    input  wire [ADDR_W-1:0]    wr_addr,
    input  wire [DATA_W-1:0]    wr_data,
    input  wire [DATA_W/8-1:0]  wr_strb,
    output wire                 wr_idle,
    input  wire                 err_clear,
    output reg  [1:0]           mem_error,
    // AXI4 master
    output reg  [ADDR_W-1:0]    m_araddr,
    output reg  [7:0]           m_arlen,
    output wire [2:0]           m_arsize,
    output wire [1:0]           m_arburst,
    output reg                  m_arvalid,
    input  wire                 m_arready,
    input  wire [DATA_W-1:0]    m_rdata,
    input  wire [1:0]           m_rresp,
    input  wire                 m_rlast,
    input  wire                 m_rvalid,
    output reg                  m_rready,
    output reg  [ADDR_W-1:0]    m_awaddr,
    output wire [7:0]           m_awlen,
    output wire [2:0]           m_awsize,
    output wire [1:0]           m_awburst,
    output reg                  m_awvalid,
    input  wire                 m_awready,
    output reg  [DATA_W-1:0]    m_wdata,
    output reg  [DATA_W/8-1:0]  m_wstrb,
    output wire                 m_wlast,
    output reg                  m_wvalid,
    input  wire                 m_wready,
    input  wire [1:0]           m_bresp,
    input  wire                 m_bvalid,
    output wire                 m_bready
);
    localparam BYTES = DATA_W / 8;
    localparam LOG_B = (BYTES == 4) ? 2 : (BYTES == 8) ? 3 : (BYTES == 16) ? 4 : (BYTES == 32) ? 5 : 6;
    localparam [2:0] SIZE = LOG_B[2:0];
    initial begin
        if (DATA_W != 32 && DATA_W != 64 && DATA_W != 128 && DATA_W != 256 && DATA_W != 512) begin
            $display("mmf_axi_master: DATA_W=%0d must be 32..512, a power of two", DATA_W);
            $finish;
        end
    end
    assign m_arsize = SIZE;
    assign m_arburst = 2'b01;
    assign m_awsize = SIZE;
    assign m_awburst = 2'b01;
    assign m_awlen = 8'd0;
    assign m_wlast = 1'b1;
    assign m_bready = 1'b1;
    // R data is counted by the core, so RLAST carries nothing it needs
    wire _unused_ok = &{1'b0, m_rlast, m_rresp[0], m_bresp[0], 1'b0};

    // ---- reads: split the command into bursts (CALC registers the burst, ISSUE presents it)
    reg  [31:0]       left;       // beats still to request
    reg  [ADDR_W-1:0] next_addr;
    reg  [8:0]        burst;      // 1..256: the burst CALC chose
    reg               have_burst;
    wire [12:0]       to_page    = 13'd4096 - {1'b0, next_addr[11:0]};
    wire [12:0]       page_beats = to_page >> LOG_B;
    wire [8:0]        cap        = (page_beats < 13'd256) ? page_beats[8:0] : 9'd256;
    wire [ADDR_W-1:0] burst_bytes = {{(ADDR_W-9){1'b0}}, burst} << LOG_B;
    assign rd_cmd_ready = (left == 32'd0) && !have_burst && !m_arvalid;
    always @(posedge clk) begin
        if (rst) begin
            left <= 32'd0;
            have_burst <= 1'b0;
            m_arvalid <= 1'b0;
        end else begin
            if (m_arvalid && m_arready) m_arvalid <= 1'b0;
            if (rd_cmd_valid && rd_cmd_ready) begin
                left <= rd_cmd_beats;
                next_addr <= rd_cmd_addr;
            end else if (!have_burst && left != 32'd0) begin
                burst <= (left < {23'd0, cap}) ? left[8:0] : cap;
                have_burst <= 1'b1;
            end else if (have_burst && (!m_arvalid || m_arready)) begin
                m_araddr <= next_addr;
                m_arlen <= burst[7:0] - 8'd1;
                m_arvalid <= 1'b1;
                next_addr <= next_addr + burst_bytes;
                left <= left - {23'd0, burst};
                have_burst <= 1'b0;
            end
        end
    end

    // ---- R skid buffer: the main register (rd_*) and a spare for a beat that arrives while the
    // core holds the main one; RREADY (a register) is high exactly while the spare is free.
    reg              r_full, s_full;
    reg [DATA_W-1:0] r_data, s_data;
    assign rd_valid = r_full;
    assign rd_data  = r_data;
    wire r_take = m_rvalid && m_rready;
    wire r_give = r_full && rd_ready;
    // next occupancy: beats held now + taken - given, in [0, 2]
    wire s_full_n = (r_full && s_full && !r_give) || (r_full && !r_give && r_take) ||
                    (s_full && r_take);
    always @(posedge clk) begin
        if (rst) begin
            r_full <= 1'b0;
            s_full <= 1'b0;
            m_rready <= 1'b0;
        end else begin
            if (r_give || !r_full) begin
                // the main register is free for the next beat: the spare's first, else the bus's
                if (s_full) begin
                    r_data <= s_data;
                    r_full <= 1'b1;
                    if (r_take) s_data <= m_rdata;
                end else begin
                    if (r_take) r_data <= m_rdata;
                    r_full <= r_take;
                end
            end else if (r_take) begin
                s_data <= m_rdata;
            end
            s_full <= s_full_n;
            m_rready <= !s_full_n;
        end
    end

    // ---- writes: one beat each, address and data presented together
    reg [15:0] outstanding;
    assign wr_ready = !m_awvalid && !m_wvalid;
    assign wr_idle = (outstanding == 16'd0) && !m_awvalid && !m_wvalid;
    always @(posedge clk) begin
        if (rst) begin
            m_awvalid <= 1'b0;
            m_wvalid <= 1'b0;
            outstanding <= 16'd0;
        end else begin
            if (m_awvalid && m_awready) m_awvalid <= 1'b0;
            if (m_wvalid && m_wready) m_wvalid <= 1'b0;
            if (wr_valid && wr_ready) begin
                m_awaddr <= wr_addr;
                m_wdata <= wr_data;
                m_wstrb <= wr_strb;
                m_awvalid <= 1'b1;
                m_wvalid <= 1'b1;
            end
            outstanding <= outstanding + ((wr_valid && wr_ready) ? 16'd1 : 16'd0)
                                       - (m_bvalid ? 16'd1 : 16'd0);
        end
    end

    // ---- response errors (SLVERR = 2'b10, DECERR = 2'b11), sticky
    always @(posedge clk) begin
        if (rst || err_clear) mem_error <= 2'b00;
        else begin
            if (r_take && m_rresp[1]) mem_error[0] <= 1'b1;
            if (m_bvalid && m_bresp[1]) mem_error[1] <= 1'b1;
        end
    end
endmodule
`default_nettype wire
