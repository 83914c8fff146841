`default_nettype none
// AXI4 master for the core's memory port. Reads: a command of N beats becomes INCR bursts of at
// most 256 beats that never cross a 4 KiB boundary, issued back to back (one ID, so data returns
// in order) while R data streams straight to the core. Writes: single-beat bursts with byte
// strobes; `wr_idle` is high when every write has its response.
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
    output wire                 m_rready,
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
    localparam SIZE  = (BYTES == 4) ? 3'd2 : (BYTES == 8) ? 3'd3 : (BYTES == 16) ? 3'd4 :
                       (BYTES == 32) ? 3'd5 : 3'd6;
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
    // the memory is trusted: responses are not checked, and R data is counted by the core
    wire _unused_ok = &{1'b0, m_rresp, m_rlast, m_bresp, 1'b0};

    // ---- reads: split the command into bursts
    reg  [31:0]       left;       // beats still to request
    reg  [ADDR_W-1:0] next_addr;
    wire [12:0]       to_page = 13'd4096 - {1'b0, next_addr[11:0]};
    wire [12:0]       page_beats = to_page / BYTES;
    wire [31:0]       cap = (page_beats < 13'd256) ? {19'd0, page_beats} : 32'd256;
    wire [31:0]       burst = (left < cap) ? left : cap;
    assign rd_cmd_ready = (left == 32'd0) && !m_arvalid;
    always @(posedge clk) begin
        if (rst) begin
            left <= 32'd0;
            m_arvalid <= 1'b0;
        end else begin
            if (rd_cmd_valid && rd_cmd_ready) begin
                left <= rd_cmd_beats;
                next_addr <= rd_cmd_addr;
            end else if ((!m_arvalid || m_arready) && left != 32'd0) begin
                m_araddr <= next_addr;
                m_arlen <= burst[7:0] - 8'd1;
                m_arvalid <= 1'b1;
                next_addr <= next_addr + burst * BYTES;
                left <= left - burst;
            end else if (m_arvalid && m_arready) begin
                m_arvalid <= 1'b0;
            end
        end
    end
    assign rd_valid = m_rvalid;
    assign m_rready = rd_ready;
    assign rd_data = m_rdata;

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
endmodule
`default_nettype wire
