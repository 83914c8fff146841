// Integer helpers shared by the core's units; `include`d inside a module body.
// They mirror quant/intref.py: rshift_round (round half up; a left shift for s <= 0),
// saturation and bit_length.

// rshift_round(x, s) for -63 <= s <= 63: floor((x + 2^(s-1)) / 2^s) for s >= 1, x << -s for s <= 0
function signed [63:0] mmf_rsr;
    input signed [63:0] x;
    input signed [7:0]  s;
    begin
        if (s > 0) mmf_rsr = (x + (64'sd1 <<< (s - 8'sd1))) >>> s;
        else mmf_rsr = x <<< (-s);
    end
endfunction

// number of bits of a non-negative value (0 -> 0)
function [6:0] mmf_bitlen;
    input [63:0] v;
    integer i;
    begin
        mmf_bitlen = 7'd0;
        for (i = 0; i < 64; i = i + 1)
            if (v[i]) mmf_bitlen = i[6:0] + 7'd1;
    end
endfunction

function signed [15:0] mmf_sat16;
    input signed [63:0] x;
    begin
        if (x > 64'sd32767) mmf_sat16 = 16'sd32767;
        else if (x < -64'sd32768) mmf_sat16 = -16'sd32768;
        else mmf_sat16 = x[15:0];
    end
endfunction

// normalize16's shift: bit_length(top) - 15 for top > 0, else 0
function signed [7:0] mmf_kfn;
    input [31:0] t;
    begin
        if (t == 32'd0) mmf_kfn = 8'sd0;
        else mmf_kfn = $signed({1'b0, mmf_bitlen({32'd0, t})}) - 8'sd15;
    end
endfunction

// bit_length of an 8-bit value (0..8): the small priority encoder the tree leading-one counts
// below are built from
function [3:0] mmf_bitlen8;
    input [7:0] v;
    integer i;
    begin
        mmf_bitlen8 = 4'd0;
        for (i = 0; i < 8; i = i + 1)
            if (v[i]) mmf_bitlen8 = i[3:0] + 4'd1;
    end
endfunction

// the byte of a 64-bit value that holds its leading one (stage 1 of the two-stage bit_length):
// {any bit set, byte index, that byte}; stage 2 is mmf_bitlen_b
function [11:0] mmf_bitlen_a;
    input [63:0] v;
    reg   [7:0]  nz;
    reg   [3:0]  hb;
    integer j;
    begin
        for (j = 0; j < 8; j = j + 1) nz[j] = |v[8*j +: 8];
        hb = mmf_bitlen8(nz);
        if (hb == 4'd0) mmf_bitlen_a = 12'd0;
        else mmf_bitlen_a = {1'b1, hb[2:0] - 3'd1, v[8*(hb - 4'd1) +: 8]};
    end
endfunction

// stage 2: bit_length = 8·(byte index) + bit_length(byte), 0 when no bit is set
function [6:0] mmf_bitlen_b;
    input [11:0] la;
    begin
        if (!la[11]) mmf_bitlen_b = 7'd0;
        else mmf_bitlen_b = {1'b0, la[10:8], 3'b000} + {3'd0, mmf_bitlen8(la[7:0])};
    end
endfunction
