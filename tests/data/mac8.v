// A signed 8x8 multiply-accumulate with registered operands and a 20-bit accumulator: the smallest
// design that every FPGA target should map onto exactly one DSP block. `en` is registered with the
// operands so that an accumulate uses the operands of its own cycle. 39 I/O pins: exactly what an
// iCE40 UP5K in the SG48 package offers, so place-and-route can run on it with every port a pin.
module mac8 (
    input  wire               clk,
    input  wire               rst,
    input  wire               en,
    input  wire signed [7:0]  a,
    input  wire signed [7:0]  b,
    output reg  signed [19:0] acc
);
    reg signed [7:0] a_q, b_q;
    reg              en_q;
    always @(posedge clk) begin
        a_q  <= a;
        b_q  <= b;
        en_q <= en;
        if (rst)
            acc <= 20'sd0;
        else if (en_q)
            acc <= acc + a_q * b_q;
    end
endmodule
