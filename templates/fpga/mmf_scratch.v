`default_nettype none
// Scratch memory: DEPTH int32 words, one synchronous read port and one write port (a block RAM).
// The core keeps three copies written together, so a row-wise step reads three operands a cycle.
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
    always @(posedge clk) begin
        if (we) mem[waddr] <= wdata;
        rdata <= mem[raddr];
    end
endmodule
`default_nettype wire
