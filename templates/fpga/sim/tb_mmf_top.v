`timescale 1ns / 1ps
`default_nettype none
// tb_mmf_top: a self-checking testbench of one bundle's core, in plain Verilog (Icarus, Verilator).
// Copied into the bundle's sim/ by `mmfree export --target fpga`; run it with FuseSoC:
//     fusesoc --cores-root <bundle> run --target sim <core name from mmfree_core.core>
//
// Layers: a host driver (AXI-Lite register writes and reads, the regmap's protocol), a card memory
// (AXI4 slave over a byte array loaded from weights.bin, with random stalls on every channel), the
// golden model's numbers (sim/golden_*.hex from the integer reference) and a checker that compares
// the logits of every decode step and the final recurrent state bit for bit. Prints one PASS line
// or FAIL lines; a failure ends in $fatal (non-zero exit).
//
// The Python/cocotb testbench in the mmfree repository (tests/fpga/tb_core.py) checks the same
// steps; this one lets a card owner check a bundle with nothing but a simulator and FuseSoC.
module tb_mmf_top;
    `include "regmap.vh"   // register offsets and bits, generated from the same map as the manifest
    parameter ADDR_W       = 64;       // card address width of the build (rtl parameters)
    parameter MEM_W        = 32;       // AXI4 data width of the build
    parameter MEM_BYTES    = 81920;    // card memory the model needs (card_memory_map end)
    parameter WEIGHT_BYTES = 69632;    // size of weights.bin, loaded at WEIGHTS
    parameter D            = 32;       // model width
    parameter VOCAB        = 61;       // logits per step
    parameter LAYERS       = 2;        // recurrent state rows
    parameter STATE_STRIDE = 128;      // bytes between state rows
    parameter STEPS        = 16;       // golden decode steps
    parameter A_WEIGHTS    = 0;        // card addresses (registers_to_write)
    parameter A_PROG       = 65536;
    parameter A_IN         = 73728;
    parameter A_OUT        = 77824;
    parameter A_STATE      = 69632;
    parameter STALL_PCT    = 15;       // % of cycles each memory channel stalls
    parameter MAX_CYCLES   = 5000000;  // per decode step before the testbench gives up
    localparam BYTES = MEM_W / 8;

    reg clk = 1'b0;
    always #5 clk = ~clk;
    reg aresetn = 1'b0;

    // ---- AXI-Lite host side
    reg  [11:0] s_awaddr = 0;  reg s_awvalid = 0;  wire s_awready;
    reg  [31:0] s_wdata = 0;   reg [3:0] s_wstrb = 0;  reg s_wvalid = 0;  wire s_wready;
    wire [1:0]  s_bresp;       wire s_bvalid;      reg s_bready = 0;
    reg  [11:0] s_araddr = 0;  reg s_arvalid = 0;  wire s_arready;
    wire [31:0] s_rdata;       wire [1:0] s_rresp; wire s_rvalid;  reg s_rready = 0;

    // ---- AXI4 card memory side
    wire [ADDR_W-1:0] m_araddr, m_awaddr;
    wire [7:0]        m_arlen, m_awlen;
    wire [2:0]        m_arsize, m_awsize;
    wire [1:0]        m_arburst, m_awburst;
    wire              m_arvalid, m_rready, m_awvalid, m_wlast, m_wvalid, m_bready;
    wire [MEM_W-1:0]  m_wdata;
    wire [BYTES-1:0]  m_wstrb;
    reg               m_arready = 0, m_rvalid = 0, m_rlast = 0, m_awready = 0, m_wready = 0, m_bvalid = 0;
    reg  [MEM_W-1:0]  m_rdata = 0;
    reg  [1:0]        m_rresp = 0, m_bresp = 0;
    wire              irq;

    mmf_top dut (
        .clk(clk), .aresetn(aresetn),
        .s_axil_awaddr(s_awaddr), .s_axil_awvalid(s_awvalid), .s_axil_awready(s_awready),
        .s_axil_wdata(s_wdata), .s_axil_wstrb(s_wstrb), .s_axil_wvalid(s_wvalid), .s_axil_wready(s_wready),
        .s_axil_bresp(s_bresp), .s_axil_bvalid(s_bvalid), .s_axil_bready(s_bready),
        .s_axil_araddr(s_araddr), .s_axil_arvalid(s_arvalid), .s_axil_arready(s_arready),
        .s_axil_rdata(s_rdata), .s_axil_rresp(s_rresp), .s_axil_rvalid(s_rvalid), .s_axil_rready(s_rready),
        .m_axi_araddr(m_araddr), .m_axi_arlen(m_arlen), .m_axi_arsize(m_arsize), .m_axi_arburst(m_arburst),
        .m_axi_arvalid(m_arvalid), .m_axi_arready(m_arready), .m_axi_rdata(m_rdata), .m_axi_rresp(m_rresp),
        .m_axi_rlast(m_rlast), .m_axi_rvalid(m_rvalid), .m_axi_rready(m_rready),
        .m_axi_awaddr(m_awaddr), .m_axi_awlen(m_awlen), .m_axi_awsize(m_awsize), .m_axi_awburst(m_awburst),
        .m_axi_awvalid(m_awvalid), .m_axi_awready(m_awready), .m_axi_wdata(m_wdata), .m_axi_wstrb(m_wstrb),
        .m_axi_wlast(m_wlast), .m_axi_wvalid(m_wvalid), .m_axi_wready(m_wready),
        .m_axi_bresp(m_bresp), .m_axi_bvalid(m_bvalid), .m_axi_bready(m_bready),
        .irq(irq));

    // ---- card memory: a byte array, AXI4 INCR bursts, one read and one write burst at a time
    reg [7:0] mem [0:MEM_BYTES-1];
    integer seed = 1;
    function stall;
        input dummy;
        begin
            stall = ({$random(seed)} % 100) < STALL_PCT;
        end
    endfunction

    function [MEM_W-1:0] beat_at;
        input [ADDR_W-1:0] addr;
        integer b;
        begin
            for (b = 0; b < BYTES; b = b + 1)
                beat_at[8*b +: 8] = (addr + b < MEM_BYTES) ? mem[addr + b] : 8'h00;
        end
    endfunction

    reg [ADDR_W-1:0] raddr, waddr;
    reg [8:0]        rleft;
    reg              rbusy = 0, wbusy = 0, bpend = 0;
    integer          wb;
    always @(posedge clk) begin
        if (!aresetn) begin
            rbusy <= 0; m_arready <= 0; m_rvalid <= 0; m_rlast <= 0;
            wbusy <= 0; bpend <= 0; m_awready <= 0; m_wready <= 0; m_bvalid <= 0;
        end else begin
            // read address and data
            if (m_arvalid && m_arready) begin
                raddr <= m_araddr; rleft <= m_arlen + 9'd1; rbusy <= 1; m_arready <= 0;
            end else if (!rbusy) begin
                m_arready <= !stall(0);
            end
            if (m_rvalid && m_rready) begin
                m_rvalid <= 0;
                raddr <= raddr + BYTES;
                rleft <= rleft - 9'd1;
                if (rleft == 9'd1) rbusy <= 0;
            end else if (rbusy && !m_rvalid && !stall(0)) begin
                m_rvalid <= 1;
                m_rdata <= beat_at(raddr);
                m_rresp <= (raddr + BYTES <= MEM_BYTES) ? 2'b00 : 2'b10;   // SLVERR past the end
                m_rlast <= (rleft == 9'd1);
            end
            // write address, data, response
            if (m_awvalid && m_awready) begin
                waddr <= m_awaddr; wbusy <= 1; m_awready <= 0;
            end else if (!wbusy && !bpend) begin
                m_awready <= !stall(0);
            end
            if (m_wvalid && m_wready) begin
                for (wb = 0; wb < BYTES; wb = wb + 1)
                    if (m_wstrb[wb] && waddr + wb < MEM_BYTES) mem[waddr + wb] <= m_wdata[8*wb +: 8];
                waddr <= waddr + BYTES;
                m_wready <= 0;
                if (m_wlast) begin wbusy <= 0; bpend <= 1; end
            end else if (wbusy) begin
                m_wready <= !stall(0);
            end
            if (m_bvalid && m_bready) begin
                m_bvalid <= 0; bpend <= 0;
            end else if (bpend && !m_bvalid && !stall(0)) begin
                m_bvalid <= 1; m_bresp <= 2'b00;
            end
        end
    end

    // ---- host driver: one aligned 32-bit register access at a time, as over /dev/xdma0_user
    task reg_write;
        input [11:0] addr;
        input [31:0] value;
        reg aw_done, w_done;
        begin
            @(negedge clk);
            s_awaddr = addr; s_awvalid = 1; s_wdata = value; s_wstrb = 4'hf; s_wvalid = 1; s_bready = 1;
            aw_done = 0; w_done = 0;
            while (!(aw_done && w_done)) begin
                @(posedge clk);
                if (s_awvalid && s_awready) aw_done = 1;
                if (s_wvalid && s_wready) w_done = 1;
                @(negedge clk);
                if (aw_done) s_awvalid = 0;
                if (w_done) s_wvalid = 0;
            end
            while (!s_bvalid) @(negedge clk);
            if (s_bresp != 2'b00) fail_reg("write", addr);
            @(posedge clk); @(negedge clk);
            s_bready = 0;
        end
    endtask

    task reg_read;
        input  [11:0] addr;
        output [31:0] value;
        reg ar_done;
        begin
            @(negedge clk);
            s_araddr = addr; s_arvalid = 1; s_rready = 1;
            ar_done = 0;
            while (!ar_done) begin
                @(posedge clk);
                if (s_arvalid && s_arready) ar_done = 1;
                @(negedge clk);
                if (ar_done) s_arvalid = 0;
            end
            while (!s_rvalid) @(negedge clk);
            value = s_rdata;
            if (s_rresp != 2'b00) fail_reg("read", addr);
            @(posedge clk); @(negedge clk);
            s_rready = 0;
        end
    endtask

    task fail_reg;
        input [8*8-1:0] what;
        input [11:0] addr;
        begin
            $display("FAIL: register %0s at 0x%03h answered an error response", what, addr);
            $fatal(1);
        end
    endtask

    // ---- golden numbers and the checker
    reg [31:0] golden_in     [0:STEPS*D-1];
    reg [31:0] golden_logits [0:STEPS*VOCAB-1];
    reg [31:0] golden_state  [0:LAYERS*D-1];

    function [31:0] word_at;
        input integer addr;
        begin
            word_at = {mem[addr + 3], mem[addr + 2], mem[addr + 1], mem[addr]};
        end
    endfunction

    task put_word;
        input integer addr;
        input [31:0] value;
        begin
            {mem[addr + 3], mem[addr + 2], mem[addr + 1], mem[addr]} = value;
        end
    endtask

    integer fd, got, i, t, l, cycles, bad;
    reg [31:0] value;
    initial begin
        for (i = 0; i < MEM_BYTES; i = i + 1) mem[i] = 8'h00;   // the state starts at zero
        fd = $fopen("weights.bin", "rb");
        if (fd == 0) begin $display("FAIL: weights.bin not found in the run directory"); $fatal(1); end
        got = $fread(mem, fd, A_WEIGHTS, WEIGHT_BYTES);
        $fclose(fd);
        if (got != WEIGHT_BYTES) begin
            $display("FAIL: read %0d bytes of weights.bin, expected %0d", got, WEIGHT_BYTES); $fatal(1);
        end
        $readmemh("golden_in.hex", golden_in);
        $readmemh("golden_logits.hex", golden_logits);
        $readmemh("golden_state.hex", golden_state);

        repeat (8) @(posedge clk);
        aresetn = 1;
        repeat (4) @(posedge clk);
        reg_read(REG_MAGIC, value);
        if (value !== MMF_MAGIC) begin $display("FAIL: MAGIC reads %08h, expected %08h", value, MMF_MAGIC); $fatal(1); end
        reg_read(REG_DESIGN_ID, value);
        $display("core: MAGIC ok, design %08h", value);
        reg_write(REG_WEIGHTS_LO, A_WEIGHTS); reg_write(REG_WEIGHTS_HI, 0);
        reg_write(REG_PROG_LO, A_PROG);       reg_write(REG_PROG_HI, 0);
        reg_write(REG_IN_LO, A_IN);           reg_write(REG_IN_HI, 0);
        reg_write(REG_OUT_LO, A_OUT);         reg_write(REG_OUT_HI, 0);
        reg_write(REG_STATE_LO, A_STATE);     reg_write(REG_STATE_HI, 0);

        for (t = 0; t < STEPS; t = t + 1) begin
            for (i = 0; i < D; i = i + 1) put_word(A_IN + 4 * i, golden_in[t * D + i]);
            reg_write(REG_CONTROL, CONTROL_START | CONTROL_IRQ_ENABLE);
            cycles = 0;
            while (!irq && cycles < MAX_CYCLES) begin @(posedge clk); cycles = cycles + 1; end
            if (!irq) begin $display("FAIL: step %0d: no IRQ after %0d cycles", t, MAX_CYCLES); $fatal(1); end
            reg_read(REG_STATUS, value);
            if ((value & STATUS_ERROR) != 0) begin $display("FAIL: step %0d: STATUS.ERROR set (%08h)", t, value); $fatal(1); end
            reg_write(REG_STATUS, STATUS_DONE);
            @(posedge clk); @(posedge clk);
            if (irq) begin $display("FAIL: step %0d: IRQ still high after clearing DONE", t); $fatal(1); end
            bad = 0;
            for (i = 0; i < VOCAB; i = i + 1)
                if (word_at(A_OUT + 4 * i) !== golden_logits[t * VOCAB + i]) begin
                    if (bad == 0)
                        $display("FAIL: step %0d logit %0d: core %08h, golden %08h", t, i,
                                 word_at(A_OUT + 4 * i), golden_logits[t * VOCAB + i]);
                    bad = bad + 1;
                end
            if (bad != 0) begin $display("FAIL: step %0d: %0d of %0d logits differ", t, bad, VOCAB); $fatal(1); end
            $display("step %0d: %0d logits bit-exact (%0d cycles)", t, VOCAB, cycles);
        end
        for (l = 0; l < LAYERS; l = l + 1)
            for (i = 0; i < D; i = i + 1)
                if (word_at(A_STATE + l * STATE_STRIDE + 4 * i) !== golden_state[l * D + i]) begin
                    $display("FAIL: final state layer %0d element %0d: core %08h, golden %08h", l, i,
                             word_at(A_STATE + l * STATE_STRIDE + 4 * i), golden_state[l * D + i]);
                    $fatal(1);
                end
        $display("PASS: %0d decode steps bit-exact (logits and final state)", STEPS);
        $finish;
    end
endmodule
`default_nettype wire
