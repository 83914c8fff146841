`default_nettype none
// Scratch memory: DEPTH int32 words in one block RAM with one read port and one write port (the
// two ports of the device's dual-port RAM). Reads take two cycles: the RAM's own synchronous read,
// then an output register, so the path out of a deep, many-block memory (its output multiplexer)
// ends in a register instead of running on into the datapath.
module mmf_scratch #(
    parameter ADDR_W = 12   // 2**ADDR_W words
) (
    input  wire              clk,
    input  wire              we,
    input  wire [ADDR_W-1:0] waddr,
    input  wire [31:0]       wdata,
    input  wire [ADDR_W-1:0] raddr,
    output reg  [31:0]       rdata
);
    reg [31:0] mem [0:(1<<ADDR_W)-1];
    reg [31:0] rd;
    always @(posedge clk) begin
        if (we) mem[waddr] <= wdata;
        rd <= mem[raddr];
        rdata <= rd;
    end
endmodule
`default_nettype wire
