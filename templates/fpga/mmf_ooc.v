`default_nettype none
// Out-of-context harness for timing the core on an open device: mmf_top with its AXI ports
// behind registers instead of package pins (a 64-lane core has ~420 port bits, more than any
// ECP5 package's I/O). Every input bit of mmf_top comes from one long shift register fed by
// `sin`; every output bit is folded into a signature register (rotate and XOR, one LUT level),
// whose bit 0 is `sout`. Nothing of the core can be optimised away and every path into and out of
// it starts and ends at a flip-flop, as it would behind a registered interconnect on a board.
// Used by `--synth` only (export/fpga/synth.py); not part of the bundle's RTL.
module mmf_ooc #(
    parameter MEM_W  = 32,   // the generated mmf_top's card-memory data width
    parameter ADDR_W = 64    // ... and its card address width
) (
    input  wire clk,
    input  wire aresetn,
    input  wire sin,
    output wire sout
);
    localparam IN_W  = 75 + MEM_W;                       // AXI-Lite + AXI4 master inputs
    localparam OUT_W = 74 + 2 * ADDR_W + MEM_W + MEM_W / 8;  // AXI-Lite + AXI4 outputs + irq

    reg  [IN_W-1:0]  ins;
    reg  [OUT_W-1:0] sig;
    wire [OUT_W-1:0] outs;
    always @(posedge clk) ins <= {ins[IN_W-2:0], sin};
    always @(posedge clk) sig <= {sig[OUT_W-2:0], sig[OUT_W-1]} ^ outs;
    assign sout = sig[0];

    mmf_top top (
        .clk(clk), .aresetn(aresetn),
        .s_axil_awaddr(ins[11:0]), .s_axil_awvalid(ins[12]), .s_axil_wdata(ins[44:13]),
        .s_axil_wstrb(ins[48:45]), .s_axil_wvalid(ins[49]), .s_axil_bready(ins[50]),
        .s_axil_araddr(ins[62:51]), .s_axil_arvalid(ins[63]), .s_axil_rready(ins[64]),
        .m_axi_arready(ins[65]), .m_axi_rdata(ins[66 +: MEM_W]), .m_axi_rresp(ins[66+MEM_W +: 2]),
        .m_axi_rlast(ins[68+MEM_W]), .m_axi_rvalid(ins[69+MEM_W]), .m_axi_awready(ins[70+MEM_W]),
        .m_axi_wready(ins[71+MEM_W]), .m_axi_bresp(ins[72+MEM_W +: 2]), .m_axi_bvalid(ins[74+MEM_W]),
        .s_axil_awready(outs[0]), .s_axil_wready(outs[1]), .s_axil_bresp(outs[3:2]),
        .s_axil_bvalid(outs[4]), .s_axil_arready(outs[5]), .s_axil_rdata(outs[37:6]),
        .s_axil_rresp(outs[39:38]), .s_axil_rvalid(outs[40]),
        .m_axi_araddr(outs[41 +: ADDR_W]), .m_axi_arlen(outs[41+ADDR_W +: 8]),
        .m_axi_arsize(outs[49+ADDR_W +: 3]), .m_axi_arburst(outs[52+ADDR_W +: 2]),
        .m_axi_arvalid(outs[54+ADDR_W]), .m_axi_rready(outs[55+ADDR_W]),
        .m_axi_awaddr(outs[56+ADDR_W +: ADDR_W]), .m_axi_awlen(outs[56+2*ADDR_W +: 8]),
        .m_axi_awsize(outs[64+2*ADDR_W +: 3]), .m_axi_awburst(outs[67+2*ADDR_W +: 2]),
        .m_axi_awvalid(outs[69+2*ADDR_W]), .m_axi_wdata(outs[70+2*ADDR_W +: MEM_W]),
        .m_axi_wstrb(outs[70+2*ADDR_W+MEM_W +: MEM_W/8]),
        .m_axi_wlast(outs[70+2*ADDR_W+MEM_W+MEM_W/8]), .m_axi_wvalid(outs[71+2*ADDR_W+MEM_W+MEM_W/8]),
        .m_axi_bready(outs[72+2*ADDR_W+MEM_W+MEM_W/8]), .irq(outs[73+2*ADDR_W+MEM_W+MEM_W/8]));
endmodule
`default_nettype wire
