`default_nettype none
// Ternary matrix-vector unit: y[r] = sum_k w[r][k] * x[k] with w in {-1, 0, +1} and x int8.
//
// Weights stream in one word of LANES 2-bit codes per cycle (code = w + 1: 0 -> -1, 1 -> 0,
// 2 -> +1, 3 reserved and read as 0), row after row, each row `words_per_row` words (K padded to
// a multiple of LANES with zero codes). The int8 input vector sits in an on-chip buffer of
// LANES bytes per entry, written beforehand through the x_* port. Each accepted word is turned
// into LANES signed products (select +x, -x or 0: no multipliers), summed by a registered adder
// tree of log2(LANES) levels and accumulated into the row's int32 result, which is written to
// the scratch memory at dst + row. The unit never back-pressures the tree: w_ready is high for
// the whole stream, so the lanes are busy on every cycle the memory delivers a word.
module mmf_tmv #(
    parameter LANES   = 16,  // products per cycle; a power of two, at least 2
    parameter XADDR_W = 10,  // x-buffer depth is 2**XADDR_W entries of LANES bytes (K max)
    parameter SADDR_W = 14,  // scratch address width (results go there)
    parameter ROW_W   = 16   // width of the row counter (rows per command max 2**ROW_W - 1)
) (
    input  wire                   clk,
    input  wire                   rst,
    // command: one matrix (or a slice of rows) per start, given only while !busy (the core waits
    // for busy to fall before its next instruction); start is not gated by busy here, because
    // busy -> the counters' synchronous reset was the 370M build's critical path at -8
    input  wire                   start,
    input  wire [XADDR_W:0]       words_per_row,
    input  wire [ROW_W-1:0]       rows,
    input  wire [SADDR_W-1:0]     dst,
    output wire                   busy,
    // weight stream
    input  wire                   w_valid,
    output wire                   w_ready,
    input  wire [2*LANES-1:0]     w_data,
    // x-buffer write port
    input  wire                   x_we,
    input  wire [XADDR_W-1:0]     x_waddr,
    input  wire [8*LANES-1:0]     x_wdata,
    // results
    output reg                    r_we,
    output reg  [SADDR_W-1:0]     r_addr,
    output reg  [31:0]            r_data,
    // performance: cycles a word was accepted / cycles since the first word of this command
    output reg  [31:0]            perf_active,
    output reg  [31:0]            perf_window
);
    function integer clog2;
        input integer v;
        integer r;
        begin
            r = 0;
            while ((1 << r) < v) r = r + 1;
            clog2 = r;
        end
    endfunction

    localparam LEVELS = clog2(LANES);
    localparam TW     = 9 + LEVELS;        // a product needs 9 bits; each level adds one
    localparam NODES  = 2 * LANES - 1;     // heap-ordered tree: node n sums 2n+1 and 2n+2

    initial begin
        if ((1 << LEVELS) != LANES || LANES < 2) begin
            $display("mmf_tmv: LANES=%0d must be a power of two >= 2", LANES);
            $finish;
        end
    end

    // ---- input side: counters over words and rows
    reg                 running;
    reg [XADDR_W:0]     word_cnt;
    reg [ROW_W-1:0]     row_cnt;
    reg [XADDR_W:0]     wpr;
    reg [ROW_W-1:0]     nrows;
    reg [SADDR_W-1:0]   base;
    reg                 seen_first;

    wire accept   = running & w_valid;
    wire row_last = (word_cnt == wpr - 1'b1);
    wire all_last = row_last & (row_cnt == nrows - 1'b1);
    assign w_ready = running;

    // x buffer: synchronous read addressed by the *next* word index so that the entry for the
    // word being accepted is on xq in the same cycle (the address only moves on accept).
    reg  [8*LANES-1:0]  xbuf [0:(1<<XADDR_W)-1];
    reg  [8*LANES-1:0]  xq;
    wire [XADDR_W:0]    next_word = accept ? (row_last ? {(XADDR_W+1){1'b0}} : word_cnt + 1'b1)
                                           : word_cnt;
    always @(posedge clk) begin
        if (x_we) xbuf[x_waddr] <= x_wdata;
        xq <= xbuf[next_word[XADDR_W-1:0]];
    end

    always @(posedge clk) begin
        if (rst) begin
            running <= 1'b0;
            word_cnt <= 0;
            row_cnt <= 0;
            wpr <= 0;
            nrows <= 0;
            base <= 0;
            seen_first <= 1'b0;
        end else if (start) begin
            running <= (rows != 0) && (words_per_row != 0);
            word_cnt <= 0;
            row_cnt <= 0;
            wpr <= words_per_row;
            nrows <= rows;
            base <= dst;
            seen_first <= 1'b0;
        end else if (accept) begin
            seen_first <= 1'b1;
            word_cnt <= next_word;
            if (row_last) row_cnt <= row_cnt + 1'b1;
            if (all_last) running <= 1'b0;
        end
    end

    // ---- the tree: the word and its x entry registered (the block RAM's read is slow), then the
    // leaves are the products, every level a register stage
    reg [2*LANES-1:0] w_d;
    reg [8*LANES-1:0] x_d;
    always @(posedge clk) begin
        w_d <= w_data;
        x_d <= xq;
    end
    reg [TW-1:0]  node [0:NODES-1];
    reg [LEVELS+1:0] v_pipe; // a word is in this stage
    reg [LEVELS+1:0] l_pipe; // ... and it is the last word of its row
    integer n;
    always @(posedge clk) begin
        for (n = 0; n < LANES; n = n + 1) begin : leaf
            case (w_d[2*n +: 2])
                2'd0:    node[LANES-1+n] <= -{{(TW-8){x_d[8*n+7]}}, x_d[8*n +: 8]};
                2'd2:    node[LANES-1+n] <=  {{(TW-8){x_d[8*n+7]}}, x_d[8*n +: 8]};
                default: node[LANES-1+n] <= {TW{1'b0}};
            endcase
        end
        for (n = 0; n < LANES - 1; n = n + 1)
            node[n] <= node[2*n+1] + node[2*n+2];
    end
    always @(posedge clk) begin
        if (rst) begin
            v_pipe <= 0;
            l_pipe <= 0;
        end else begin
            v_pipe <= {v_pipe[LEVELS:0], accept};
            l_pipe <= {l_pipe[LEVELS:0], accept & row_last};
        end
    end

    // ---- accumulate rows, write each result once its last word leaves the tree
    reg  [31:0]       acc;
    reg  [ROW_W-1:0]  out_row;
    wire [31:0]       root = {{(32-TW){node[0][TW-1]}}, node[0]};
    always @(posedge clk) begin
        r_we <= 1'b0;
        if (rst) begin
            acc <= 0;
            out_row <= 0;
        end else begin
            if (start) out_row <= 0;
            if (v_pipe[LEVELS+1]) begin
                if (l_pipe[LEVELS+1]) begin
                    r_we <= 1'b1;
                    r_addr <= base + out_row[SADDR_W-1:0];
                    r_data <= acc + root;
                    acc <= 0;
                    out_row <= out_row + 1'b1;
                end else begin
                    acc <= acc + root;
                end
            end
        end
    end

    always @(posedge clk) begin
        if (rst || start) begin
            perf_active <= 0;
            perf_window <= 0;
        end else if (running) begin
            if (accept) perf_active <= perf_active + 1'b1;
            if (accept || seen_first) perf_window <= perf_window + 1'b1;
        end
    end

    assign busy = running | (|v_pipe) | r_we;
endmodule
`default_nettype wire
