`default_nettype none
// Scratch memory: 2**ADDR_W int32 words in V banks (bank = address mod V), each one block RAM
// with a read port and a write port. A read returns the V words of one row (addresses row·V ..
// row·V + V-1) so an element pass takes V elements a cycle; a write stores any subset of a row's
// words (the mask), so the matrix-vector unit can write one word. Reads take two cycles: the
// RAM's own synchronous read, then an output register, so the path out of a deep, many-block
// memory (its output multiplexer) ends in a register instead of running on into the datapath.
module mmf_scratch #(
    parameter ADDR_W = 12,   // 2**ADDR_W words in all
    parameter V      = 1,    // banks: words per row (a power of two)
    parameter LOG_V  = 0     // log2(V)
) (
    input  wire                    clk,
    input  wire [V-1:0]            we,       // per bank
    input  wire [ADDR_W-LOG_V-1:0] waddr,    // row
    input  wire [32*V-1:0]         wdata,
    input  wire [ADDR_W-LOG_V-1:0] raddr,    // row
    output wire [32*V-1:0]         rdata
);
    genvar j;
    generate
        for (j = 0; j < V; j = j + 1) begin : bank
            reg [31:0] mem [0:(1<<(ADDR_W-LOG_V))-1];
            reg [31:0] rd, q;
            always @(posedge clk) begin
                if (we[j]) mem[waddr] <= wdata[32*j +: 32];
                rd <= mem[raddr];
                q <= rd;
            end
            assign rdata[32*j +: 32] = q;
        end
    endgenerate
endmodule
`default_nettype wire
