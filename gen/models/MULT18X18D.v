// Behavioural simulation model of the ECP5 sysDSP 18x18 multiplier MULT18X18D, for the subset hardwire
// instantiates (hardwire.gen.dsp) and yosys' synth_ecp5 maps `a * b` to: A x B with per-operand
// signedness, the A and B input registers, the pipeline register after the multiplier and the output
// register, each either bypassed (REG_*_CLK = "NONE") or clocked by CLK0 with a clock enable CE0..CE3 and
// a synchronous reset RST0..RST3 of its own choice. yosys ships this primitive only as a blackbox
// (ecp5/cells_bb.v), so the model is written from Lattice's "ECP5 and ECP5-5G sysDSP Usage Guide"
// (FPGA-TN-02205). Anything outside the subset (the C port, present but unused, the shift chains
// SRIA/SRIB, clocks other than CLK0, asynchronous reset, the multiplier bypass) stops the simulation at
// time 0 instead of being modelled wrongly.
/* verilator lint_off UNUSEDPARAM */
/* verilator lint_off UNUSEDSIGNAL */
module MULT18X18D (
    input A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
    input B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
    input C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input CLK0, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,
    output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
           P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    wire [3:0] ce = {CE3, CE2, CE1, CE0};
    wire [3:0] rst = {RST3, RST2, RST1, RST0};

    // which of CE0..CE3 / RST0..RST3 each register takes
    localparam integer CE_A = REG_INPUTA_CE == "CE1" ? 1 : REG_INPUTA_CE == "CE2" ? 2 : REG_INPUTA_CE == "CE3" ? 3 : 0;
    localparam integer CE_B = REG_INPUTB_CE == "CE1" ? 1 : REG_INPUTB_CE == "CE2" ? 2 : REG_INPUTB_CE == "CE3" ? 3 : 0;
    localparam integer CE_P = REG_PIPELINE_CE == "CE1" ? 1 : REG_PIPELINE_CE == "CE2" ? 2 :
                              REG_PIPELINE_CE == "CE3" ? 3 : 0;
    localparam integer CE_O = REG_OUTPUT_CE == "CE1" ? 1 : REG_OUTPUT_CE == "CE2" ? 2 : REG_OUTPUT_CE == "CE3" ? 3 : 0;
    localparam integer RST_A = REG_INPUTA_RST == "RST1" ? 1 : REG_INPUTA_RST == "RST2" ? 2 :
                               REG_INPUTA_RST == "RST3" ? 3 : 0;
    localparam integer RST_B = REG_INPUTB_RST == "RST1" ? 1 : REG_INPUTB_RST == "RST2" ? 2 :
                               REG_INPUTB_RST == "RST3" ? 3 : 0;
    localparam integer RST_P = REG_PIPELINE_RST == "RST1" ? 1 : REG_PIPELINE_RST == "RST2" ? 2 :
                               REG_PIPELINE_RST == "RST3" ? 3 : 0;
    localparam integer RST_O = REG_OUTPUT_RST == "RST1" ? 1 : REG_OUTPUT_RST == "RST2" ? 2 :
                               REG_OUTPUT_RST == "RST3" ? 3 : 0;

    initial begin
        if (!(REG_INPUTA_CLK == "NONE" || REG_INPUTA_CLK == "CLK0") || !(REG_INPUTB_CLK == "NONE" ||
                REG_INPUTB_CLK == "CLK0") || !(REG_PIPELINE_CLK == "NONE" || REG_PIPELINE_CLK == "CLK0") ||
                !(REG_OUTPUT_CLK == "NONE" || REG_OUTPUT_CLK == "CLK0") || REG_INPUTC_CLK != "NONE" ||
                MULT_BYPASS != "DISABLED" || RESETMODE != "SYNC" || SOURCEB_MODE != "B_SHIFT") begin
            $display("MULT18X18D model: a parameter outside the modelled subset");
            $finish;
        end
    end

    // Signedness travels with its operand through the input register, as in the silicon.
    reg [17:0] a_reg, b_reg;
    reg signed_a_reg, signed_b_reg;
    wire [17:0] a_op = REG_INPUTA_CLK == "NONE" ? a : a_reg;
    wire [17:0] b_op = REG_INPUTB_CLK == "NONE" ? b : b_reg;
    wire signed_a = REG_INPUTA_CLK == "NONE" ? SIGNEDA : signed_a_reg;
    wire signed_b = REG_INPUTB_CLK == "NONE" ? SIGNEDB : signed_b_reg;
    wire signed [18:0] a_ext = {signed_a & a_op[17], a_op};
    wire signed [18:0] b_ext = {signed_b & b_op[17], b_op};
    wire signed [37:0] full = a_ext * b_ext;
    wire [35:0] product = full[35:0];

    reg [35:0] pipeline_reg, output_reg;
    wire [35:0] pipelined = REG_PIPELINE_CLK == "NONE" ? product : pipeline_reg;
    wire [35:0] result = REG_OUTPUT_CLK == "NONE" ? pipelined : output_reg;

    always @(posedge CLK0) begin
        if (rst[RST_A]) begin
            a_reg <= 18'd0;
            signed_a_reg <= 1'b0;
        end else if (ce[CE_A]) begin
            a_reg <= a;
            signed_a_reg <= SIGNEDA;
        end
        if (rst[RST_B]) begin
            b_reg <= 18'd0;
            signed_b_reg <= 1'b0;
        end else if (ce[CE_B]) begin
            b_reg <= b;
            signed_b_reg <= SIGNEDB;
        end
        if (rst[RST_P]) pipeline_reg <= 36'd0;
        else if (ce[CE_P]) pipeline_reg <= product;
        if (rst[RST_O]) output_reg <= 36'd0;
        else if (ce[CE_O]) output_reg <= pipelined;
    end

    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
           P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = result;
endmodule
/* verilator lint_on UNUSEDSIGNAL */
/* verilator lint_on UNUSEDPARAM */
