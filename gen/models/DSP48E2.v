// Behavioural simulation model of the Xilinx UltraScale(+) DSP48E2, for the subset hardwire instantiates
// (hardwire.gen.dsp.dsp48e2_packed_mac): the 27-bit pre-adder AD = D + A[26:0] feeding the multiplier
// (AMULTSEL = "AD", INMODE = 5'b00100) or A alone (AMULTSEL = "A", INMODE = 5'b00000), the 27 x 18 signed
// multiplier, and the post-adder P = Z + M with Z = 0, PCIN or P (OPMODE W = 0, X = Y = M), ALUMODE = 0,
// no carry in. A, B, D, M and P registers (AREG/BREG/DREG in {0, 1}: the A2/B2 register, ADREG = 0,
// MREG/PREG in {0, 1}) with their clock enables. yosys ships this primitive only as a blackbox
// (xilinx/cells_xtra.v), so the model is written from AMD's UG579 (UltraScale DSP slice user guide);
// anything outside the subset stops the simulation at time 0, or at the first clock edge for a dynamic
// OPMODE/INMODE/ALUMODE value, instead of being modelled wrongly.
/* verilator lint_off UNUSEDPARAM */
/* verilator lint_off UNUSEDSIGNAL */
module DSP48E2 (
    input CLK,
    input [29:0] A,
    input [17:0] B,
    input [26:0] D,
    input [47:0] PCIN,
    input [4:0] INMODE,
    input [8:0] OPMODE,
    input [3:0] ALUMODE,
    input CARRYIN,
    input CEA1, CEA2, CEB1, CEB2, CED, CEAD, CEM, CEP,
    input RSTA, RSTB, RSTD, RSTM, RSTP,
    output [47:0] P,
    output [47:0] PCOUT
);
    parameter integer ACASCREG = 1;
    parameter integer ADREG = 1;
    parameter integer ALUMODEREG = 1;
    parameter AMULTSEL = "A";
    parameter integer AREG = 1;
    parameter A_INPUT = "DIRECT";
    parameter integer BCASCREG = 1;
    parameter BMULTSEL = "B";
    parameter integer BREG = 1;
    parameter B_INPUT = "DIRECT";
    parameter integer CARRYINREG = 1;
    parameter integer CARRYINSELREG = 1;
    parameter integer CREG = 1;
    parameter integer DREG = 1;
    parameter integer INMODEREG = 1;
    parameter integer MREG = 1;
    parameter integer OPMODEREG = 1;
    parameter PREADDINSEL = "A";
    parameter integer PREG = 1;
    parameter USE_MULT = "MULTIPLY";
    parameter USE_SIMD = "ONE48";

    initial begin
        if (AREG > 1 || BREG > 1 || DREG > 1 || ADREG != 0 || MREG > 1 || PREG > 1 || INMODEREG != 0 ||
                OPMODEREG != 0 || ALUMODEREG != 0 || !(AMULTSEL == "A" || AMULTSEL == "AD") || BMULTSEL != "B" ||
                PREADDINSEL != "A" || USE_MULT != "MULTIPLY" || USE_SIMD != "ONE48" || A_INPUT != "DIRECT" ||
                B_INPUT != "DIRECT") begin
            $display("DSP48E2 model: a parameter outside the modelled subset");
            $finish;
        end
    end

    reg [29:0] a_reg;
    reg [17:0] b_reg;
    reg [26:0] d_reg;
    reg [44:0] m_reg;
    reg [47:0] p_reg;

    wire [26:0] a_op = AREG == 0 ? A[26:0] : a_reg[26:0];
    wire [17:0] b_op = BREG == 0 ? B : b_reg;
    wire [26:0] d_op = DREG == 0 ? D : d_reg;
    // INMODE[2] gates D into the pre-adder; INMODE[3] = 0 adds; INMODE[1] = 0 takes A2 (the only A register)
    wire [26:0] ad = (INMODE[2] ? d_op : 27'd0) + a_op;
    wire signed [26:0] mult_a = AMULTSEL == "AD" ? ad : a_op;
    wire signed [17:0] mult_b = b_op;
    wire signed [44:0] product = mult_a * mult_b;
    wire [44:0] m_op = MREG == 0 ? product : m_reg;
    // X and Y both select M: their sum is the product (the silicon's two partial products), sign-extended
    wire [47:0] xy = {{3{m_op[44]}}, m_op} & {48{OPMODE[1:0] == 2'b01}};
    wire [47:0] z = OPMODE[6:4] == 3'b001 ? PCIN : OPMODE[6:4] == 3'b010 ? p_reg : 48'd0;
    wire [47:0] sum = z + xy;
    assign P = PREG == 0 ? sum : p_reg;
    assign PCOUT = P;

    always @(posedge CLK) begin
        if (OPMODE[8:7] != 2'b00 || OPMODE[3:2] != OPMODE[1:0] || OPMODE[6:4] > 3'b010 || ALUMODE != 4'b0000 ||
                CARRYIN != 1'b0 || INMODE[4] || INMODE[3] || INMODE[1] || INMODE[0]) begin
            $display("DSP48E2 model: a dynamic control value outside the modelled subset");
            $finish;
        end
        if (RSTA) a_reg <= 30'd0; else if (CEA2) a_reg <= A;
        if (RSTB) b_reg <= 18'd0; else if (CEB2) b_reg <= B;
        if (RSTD) d_reg <= 27'd0; else if (CED) d_reg <= D;
        if (RSTM) m_reg <= 45'd0; else if (CEM) m_reg <= product;
        if (RSTP) p_reg <= 48'd0; else if (CEP) p_reg <= sum;
    end
endmodule
/* verilator lint_on UNUSEDSIGNAL */
/* verilator lint_on UNUSEDPARAM */
