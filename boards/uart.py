"""The board side of the host link: a UART receiver and transmitter and the frame bridge between them and a design.

The bridge speaks boards/link.py's frames. Receiving, it checks every field of a frame a byte per cycle
(the CRC-16/CCITT-FALSE of each byte folded in as it arrives) and keeps an INFER frame's payload in a small
memory; only a frame whose CRC matches is fed to the design, beat by beat, so a corrupted frame never
reaches the network. Every malformed frame (bad CRC, wrong length, unknown type, a stray byte outside a
frame, a host that stalls mid-frame, a receive FIFO overrun) is answered with one ERROR frame naming it and
the frame's sequence number; then the bridge discards bytes until the line has been idle for
`drain_idle_cycles`, so the rest of a broken frame cannot start a phantom one.

Transmitting, each inference's output beats go out as one RESULT frame, streamed straight from the design's
output stream (the design waits on back-pressure; no output buffer), with the sequence number of the INFER
frame that produced it taken from a small FIFO filled when feeding starts. ERROR and INFO_REPLY frames are
sent between RESULT frames, never inside one.

The UARTs are 8N1 with `clocks_per_bit` clock cycles per bit; the receiver samples mid-bit after a
two-flip-flop synchronizer. No UART core from a library is used: amaranth-stdio is not on PyPI.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hardwire.boards.link import SYNC, ErrorCode, FrameType, LinkGeometry, NO_SEQUENCE
from hardwire.params import require

CRC_INIT = 0xFFFF
CRC_POLY = 0x1021


def _crc16_taps() -> list[tuple[frozenset, frozenset]]:
    """For each bit of the next CRC register: which register bits and which data bits it is the XOR of (the
    eight MSB-first shift steps unrolled symbolically, so the hardware is a flat XOR per bit, not a chain)."""
    bits = [(frozenset({i}), frozenset()) for i in range(16)]
    for data_bit in range(7, -1, -1):
        feedback = (bits[15][0], bits[15][1] ^ {data_bit})
        shifted = [(frozenset(), frozenset())] + bits[:15]
        bits = [
            (r ^ feedback[0], d ^ feedback[1]) if (CRC_POLY >> j) & 1 else (r, d) for j, (r, d) in enumerate(shifted)
        ]
    return bits


_CRC16_TAPS = _crc16_taps()


def crc16_next(crc, byte):
    """The CRC-16/CCITT-FALSE register after shifting in `byte`, MSB first: combinational, one byte a cycle."""
    out = []
    for register_bits, data_bits in _CRC16_TAPS:
        terms = [crc[i] for i in sorted(register_bits)] + [byte[i] for i in sorted(data_bits)]
        out.append(functools.reduce(operator.xor, terms) if terms else Const(0, 1))
    return Cat(*out)


class StateMachine:
    """A state register with one `If` per state. Amaranth's FSM and Switch become Verilog case statements
    that yosys prunes per signal, which `verilator -Wall` reports as incomplete (CASEINCOMPLETE); mutually
    exclusive Ifs do not. A state code no state has (an upset register) returns to the first state."""

    def __init__(self, m: Module, name: str, states: tuple[str, ...]):
        self.m, self.codes = m, {state: code for code, state in enumerate(states)}
        self.state = Signal(range(len(states)), name=name)

    def goto(self, state: str) -> None:
        self.m.d.sync += self.state.eq(self.codes[state])

    @contextlib.contextmanager
    def switch(self):
        yield self
        if len(self.codes) != 1 << (len(self.codes) - 1).bit_length():
            with self.m.If(self.state >= len(self.codes)):
                self.m.d.sync += self.state.eq(0)

    @contextlib.contextmanager
    def case(self, state: str):
        with self.m.If(self.state == self.codes[state]):
            yield


class UartRx(wiring.Component):
    """8N1 receiver: `rx` pin in, one `data` byte with a one-cycle `strobe` per received byte."""

    def __init__(self, clocks_per_bit: int):
        require(clocks_per_bit >= 4, "clocks_per_bit", clocks_per_bit, ">= 4 (mid-bit sampling)")
        self.clocks_per_bit = clocks_per_bit
        super().__init__({"rx": In(1, init=1), "data": Out(8), "strobe": Out(1)})

    def elaborate(self, platform):
        m = Module()
        # two flip-flops against metastability (amaranth.lib.cdc.FFSynchronizer would leave its reset unused)
        stage1 = Signal(init=1)
        rx = Signal(init=1)
        m.d.sync += [stage1.eq(self.rx), rx.eq(stage1)]
        counter = Signal(range(self.clocks_per_bit))
        bit = Signal(range(8))
        shift = Signal(8)
        with m.If(counter != 0):
            m.d.sync += counter.eq(counter - 1)
        fsm = StateMachine(m, "rx_state", ("IDLE", "START", "DATA", "STOP", "BREAK"))
        with fsm.switch():
            with fsm.case("IDLE"):
                with m.If(~rx):
                    m.d.sync += counter.eq(self.clocks_per_bit // 2 - 1)
                    fsm.goto("START")
            with fsm.case("START"):
                with m.If(counter == 0):
                    with m.If(~rx):
                        m.d.sync += [counter.eq(self.clocks_per_bit - 1), bit.eq(0)]
                        fsm.goto("DATA")
                    with m.Else():
                        fsm.goto("IDLE")  # a glitch, not a start bit
            with fsm.case("DATA"):
                with m.If(counter == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], rx)), counter.eq(self.clocks_per_bit - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        fsm.goto("STOP")
            with fsm.case("STOP"):
                with m.If(counter == 0):
                    with m.If(rx):
                        m.d.comb += self.strobe.eq(1)
                        fsm.goto("IDLE")
                    with m.Else():
                        fsm.goto("BREAK")  # framing error: the byte is dropped, the CRC will say so
            with fsm.case("BREAK"):
                with m.If(rx):
                    fsm.goto("IDLE")
        m.d.comb += self.data.eq(shift)
        return m


class UartTx(wiring.Component):
    """8N1 transmitter: bytes from the `data` stream out on the `tx` pin."""

    def __init__(self, clocks_per_bit: int):
        require(clocks_per_bit >= 4, "clocks_per_bit", clocks_per_bit, ">= 4")
        self.clocks_per_bit = clocks_per_bit
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        counter = Signal(range(self.clocks_per_bit))
        bits_left = Signal(range(11))
        shift = Signal(10, init=0x3FF)
        m.d.comb += [self.tx.eq(shift[0]), self.data.ready.eq(bits_left == 0)]
        with m.If(bits_left == 0):
            with m.If(self.data.valid):
                m.d.sync += [
                    shift.eq(Cat(Const(0, 1), self.data.payload, Const(1, 1))),
                    bits_left.eq(10),
                    counter.eq(self.clocks_per_bit - 1),
                ]
        with m.Elif(counter == 0):
            m.d.sync += [
                shift.eq(Cat(shift[1:], Const(1, 1))),
                bits_left.eq(bits_left - 1),
                counter.eq(self.clocks_per_bit - 1),
            ]
        with m.Else():
            m.d.sync += counter.eq(counter - 1)
        return m


@dataclass(frozen=True)
class BridgeParams:
    """The bridge of one design: its link geometry and the UART's timing, all in clock cycles."""

    geometry: LinkGeometry
    clocks_per_bit: int
    stall_timeout_cycles: int  # a frame whose next byte does not come within this is abandoned
    drain_idle_cycles: int  # after an error, bytes are discarded until the line idles this long
    rx_fifo_depth: int = 16

    def __post_init__(self):
        require(self.clocks_per_bit >= 4, "clocks_per_bit", self.clocks_per_bit, ">= 4")
        byte_cycles = 10 * self.clocks_per_bit
        require(
            self.stall_timeout_cycles >= 2 * byte_cycles,
            "stall_timeout_cycles",
            self.stall_timeout_cycles,
            f">= two byte times ({2 * byte_cycles} cycles)",
        )
        require(
            self.drain_idle_cycles >= 2 * byte_cycles,
            "drain_idle_cycles",
            self.drain_idle_cycles,
            f">= two byte times ({2 * byte_cycles} cycles)",
        )
        require(
            1 <= self.geometry.inp.payload_bytes <= 0xFFFF,
            "input payload bytes",
            self.geometry.inp.payload_bytes,
            "1..65535",
        )
        require(
            1 <= self.geometry.out.payload_bytes <= 0xFFFF,
            "output payload bytes",
            self.geometry.out.payload_bytes,
            "1..65535",
        )

    @classmethod
    def for_clock(
        cls,
        geometry: LinkGeometry,
        clock_hz: float,
        baud: int,
        *,
        stall_timeout_s: float = 0.05,
        drain_idle_s: float = 0.005,
    ) -> BridgeParams:
        """Cycle counts from a clock, a baud rate and times in seconds (the defaults suit a USB-UART)."""
        clocks_per_bit = round(clock_hz / baud)
        require(
            clocks_per_bit >= 4, "baud", baud, f"<= clock / 4 = {int(clock_hz // 4)} for a {clock_hz / 1e6:g} MHz clock"
        )
        byte_cycles = 10 * clocks_per_bit
        return cls(
            geometry,
            clocks_per_bit,
            max(2 * byte_cycles, round(stall_timeout_s * clock_hz)),
            max(2 * byte_cycles, round(drain_idle_s * clock_hz)),
        )


def turnaround_cycles(geometry: LinkGeometry, first_output_cycles: int) -> int:
    """Clock cycles from an INFER frame's last byte to its RESULT frame's first byte: the checked payload fed
    to the design (a byte per two cycles, plus a cycle per beat pushed) and the design's first-output latency.
    The RESULT frame then streams while the later outputs come, which the UART is slower than."""
    return 2 * geometry.inp.payload_bytes + geometry.inp.beats + first_output_cycles


class UartBridge(wiring.Component):
    """UART pins on one side, the design's input and output streams (flat beats) on the other."""

    def __init__(self, p: BridgeParams):
        self.p = p
        g = p.geometry
        super().__init__(
            {
                "rx": In(1, init=1),
                "tx": Out(1, init=1),
                "to_design": Out(stream.Signature(unsigned(g.inp.beat_bits))),
                "from_design": In(stream.Signature(unsigned(g.out.beat_bits))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p, g = self.p, self.p.geometry
        m.submodules.uart_rx = uart_rx = UartRx(p.clocks_per_bit)
        m.submodules.uart_tx = uart_tx = UartTx(p.clocks_per_bit)
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]

        rx_fifo = m.submodules.rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=p.rx_fifo_depth)
        errors = m.submodules.errors = fifo.SyncFIFOBuffered(width=16, depth=4)  # code, sequence
        sequences = m.submodules.sequences = fifo.SyncFIFOBuffered(width=8, depth=4)  # of fed frames

        # --- receive: bytes into the FIFO; the idle counter restarts at every byte on the line ----------------
        idle = Signal(range(max(p.stall_timeout_cycles, p.drain_idle_cycles) + 1))
        overrun = Signal()
        m.d.comb += [
            rx_fifo.w_data.eq(uart_rx.data),
            rx_fifo.w_en.eq(uart_rx.strobe),
            overrun.eq(uart_rx.strobe & ~rx_fifo.w_rdy),
        ]
        with m.If(uart_rx.strobe):
            m.d.sync += idle.eq(0)
        with m.Elif(idle < max(p.stall_timeout_cycles, p.drain_idle_cycles)):
            m.d.sync += idle.eq(idle + 1)

        # --- parse -----------------------------------------------------------------------------------------------
        buffer = m.submodules.buffer = Memory(shape=unsigned(8), depth=g.inp.payload_bytes, init=[])
        write = buffer.write_port()
        read = buffer.read_port(transparent_for=())
        frame_type = Signal(8)
        sequence = Signal(8, init=NO_SEQUENCE)
        length = Signal(16)
        index = Signal(16)
        crc = Signal(16, init=CRC_INIT)
        crc_low = Signal(8)
        beat = Signal(8 * g.inp.beat_bytes)
        beat_byte = Signal(range(g.inp.beat_bytes + 1))
        info_pending = Signal()
        info_sent = Signal()
        byte = rx_fifo.r_data
        take = Signal()  # this cycle consumes a received byte
        m.d.comb += rx_fifo.r_en.eq(take)
        got = rx_fifo.r_rdy

        error_code = Signal(8)
        raise_error = Signal()
        m.d.comb += [errors.w_data.eq(Cat(error_code, sequence)), errors.w_en.eq(raise_error)]

        parser = StateMachine(
            m,
            "parser_state",
            (
                "IDLE",
                "TYPE",
                "SEQUENCE",
                "LENGTH0",
                "LENGTH1",
                "PAYLOAD",
                "CRC0",
                "CRC1",
                "FEED_START",
                "FEED_READ",
                "FEED_TAKE",
                "FEED_PUSH",
                "DRAIN",
            ),
        )

        def fail(code):
            m.d.comb += [raise_error.eq(1), error_code.eq(code)]
            parser.goto("DRAIN")

        mid_frame_stall = (idle >= p.stall_timeout_cycles) & ~got
        with parser.switch():
            with parser.case("IDLE"):
                m.d.comb += take.eq(got)
                m.d.sync += [crc.eq(CRC_INIT), sequence.eq(NO_SEQUENCE)]
                with m.If(got):
                    with m.If(byte == SYNC):
                        parser.goto("TYPE")
                    with m.Else():
                        fail(ErrorCode.NO_SYNC)
            for state, target, following in (
                ("TYPE", frame_type, "SEQUENCE"),
                ("SEQUENCE", sequence, "LENGTH0"),
                ("LENGTH0", length[:8], "LENGTH1"),
            ):
                with parser.case(state):
                    m.d.comb += take.eq(got)
                    with m.If(got):
                        m.d.sync += [target.eq(byte), crc.eq(crc16_next(crc, byte))]
                        parser.goto(following)
                    with m.Elif(mid_frame_stall):
                        fail(ErrorCode.TIMEOUT)
            with parser.case("LENGTH1"):
                m.d.comb += take.eq(got)
                with m.If(got):
                    m.d.sync += [length[8:].eq(byte), crc.eq(crc16_next(crc, byte)), index.eq(0)]
                    full_length = Cat(length[:8], byte)
                    with m.If(frame_type == FrameType.INFER):
                        with m.If(full_length == g.inp.payload_bytes):
                            parser.goto("PAYLOAD")
                        with m.Else():
                            fail(ErrorCode.BAD_LENGTH)
                    with m.Elif(frame_type == FrameType.INFO):
                        with m.If(full_length == 0):
                            parser.goto("CRC0")
                        with m.Else():
                            fail(ErrorCode.BAD_LENGTH)
                    with m.Else():
                        fail(ErrorCode.BAD_TYPE)
                with m.Elif(mid_frame_stall):
                    fail(ErrorCode.TIMEOUT)
            with parser.case("PAYLOAD"):
                m.d.comb += [take.eq(got), write.addr.eq(index), write.data.eq(byte), write.en.eq(got)]
                with m.If(got):
                    m.d.sync += [crc.eq(crc16_next(crc, byte)), index.eq(index + 1)]
                    with m.If(index == length - 1):
                        parser.goto("CRC0")
                with m.Elif(mid_frame_stall):
                    fail(ErrorCode.TIMEOUT)
            with parser.case("CRC0"):
                m.d.comb += take.eq(got)
                with m.If(got):
                    m.d.sync += crc_low.eq(byte)
                    parser.goto("CRC1")
                with m.Elif(mid_frame_stall):
                    fail(ErrorCode.TIMEOUT)
            with parser.case("CRC1"):
                m.d.comb += take.eq(got)
                with m.If(got):
                    with m.If(Cat(crc_low, byte) != crc):
                        fail(ErrorCode.BAD_CRC)
                    with m.Elif(frame_type == FrameType.INFO):
                        m.d.sync += info_pending.eq(1)
                        parser.goto("IDLE")
                    with m.Else():
                        m.d.sync += [index.eq(0), beat_byte.eq(0)]
                        parser.goto("FEED_START")
                with m.Elif(mid_frame_stall):
                    fail(ErrorCode.TIMEOUT)
            with parser.case("FEED_START"):
                # the sequence number waits in a FIFO for the RESULT frame this inference will produce
                with m.If(sequences.w_rdy):
                    m.d.comb += [sequences.w_en.eq(1), sequences.w_data.eq(sequence)]
                    parser.goto("FEED_READ")
            with parser.case("FEED_READ"):
                m.d.comb += [read.addr.eq(index), read.en.eq(1)]
                parser.goto("FEED_TAKE")
            with parser.case("FEED_TAKE"):
                m.d.sync += [beat.eq(Cat(beat[8:], read.data)), index.eq(index + 1), beat_byte.eq(beat_byte + 1)]
                with m.If(beat_byte == g.inp.beat_bytes - 1):
                    parser.goto("FEED_PUSH")
                with m.Else():
                    parser.goto("FEED_READ")
            with parser.case("FEED_PUSH"):
                m.d.comb += [self.to_design.valid.eq(1), self.to_design.payload.eq(beat[: g.inp.beat_bits])]
                with m.If(self.to_design.ready):
                    m.d.sync += beat_byte.eq(0)
                    with m.If(index == g.inp.payload_bytes):
                        parser.goto("IDLE")
                    with m.Else():
                        parser.goto("FEED_READ")
            with parser.case("DRAIN"):
                m.d.comb += take.eq(got)
                with m.If(~got & (idle >= p.drain_idle_cycles)):
                    parser.goto("IDLE")
        # An overrun is remembered until the error FIFO takes it (a parser error of the same cycle goes first).
        # The parser raises at most one error per drain period, longer than an ERROR frame takes to send, so the
        # four-entry error FIFO does not fill while the host follows the protocol.
        overrun_pending = Signal()
        with m.If(overrun):
            m.d.sync += overrun_pending.eq(1)
        with m.If(overrun_pending & ~raise_error & errors.w_rdy):
            m.d.comb += [errors.w_en.eq(1), errors.w_data.eq(Cat(Const(ErrorCode.OVERRUN, 8), Const(NO_SEQUENCE, 8)))]
            with m.If(~overrun):
                m.d.sync += overrun_pending.eq(0)
        with m.If(info_sent):
            m.d.sync += info_pending.eq(0)

        # --- transmit --------------------------------------------------------------------------------------------
        info_bytes = list(g.info_payload())
        rom_size = 1 << max(1, (len(info_bytes) - 1).bit_length())
        info_rom = Array(Const(b, 8) for b in info_bytes + [0] * (rom_size - len(info_bytes)))
        tx_type = Signal(8)
        tx_sequence = Signal(8)
        tx_code = Signal(8)
        tx_length = Signal(16)
        tx_crc = Signal(16)
        tx_index = Signal(16)
        header_index = Signal(3)
        out_shift = Signal(8 * g.out.beat_bytes)
        out_bytes_left = Signal(range(g.out.beat_bytes + 1))
        tx_byte = Signal(8)
        m.d.comb += [uart_tx.data.payload.eq(tx_byte)]
        sent = uart_tx.data.valid & uart_tx.data.ready

        sender = StateMachine(m, "sender_state", ("IDLE", "HEADER", "PAYLOAD", "CRC0", "CRC1"))
        with sender.switch():
            with sender.case("IDLE"):
                m.d.sync += [header_index.eq(0), tx_index.eq(0), tx_crc.eq(CRC_INIT), out_bytes_left.eq(0)]
                with m.If(errors.r_rdy):
                    m.d.comb += errors.r_en.eq(1)
                    m.d.sync += [
                        tx_type.eq(FrameType.ERROR),
                        tx_code.eq(errors.r_data[:8]),
                        tx_sequence.eq(errors.r_data[8:]),
                        tx_length.eq(1),
                    ]
                    sender.goto("HEADER")
                with m.Elif(info_pending):
                    m.d.comb += info_sent.eq(1)
                    m.d.sync += [tx_type.eq(FrameType.INFO_REPLY), tx_sequence.eq(0), tx_length.eq(len(info_bytes))]
                    sender.goto("HEADER")
                with m.Elif(self.from_design.valid & sequences.r_rdy):
                    m.d.comb += sequences.r_en.eq(1)
                    m.d.sync += [
                        tx_type.eq(FrameType.RESULT),
                        tx_sequence.eq(sequences.r_data),
                        tx_length.eq(g.out.payload_bytes),
                    ]
                    sender.goto("HEADER")
            with sender.case("HEADER"):
                header = Array(
                    [
                        Const(SYNC, 8),
                        tx_type,
                        tx_sequence,
                        tx_length[:8],
                        tx_length[8:],
                        Const(0, 8),
                        Const(0, 8),
                        Const(0, 8),
                    ]
                )
                m.d.comb += [tx_byte.eq(header[header_index]), uart_tx.data.valid.eq(1)]
                with m.If(sent):
                    with m.If(header_index != 0):
                        m.d.sync += tx_crc.eq(crc16_next(tx_crc, tx_byte))
                    m.d.sync += header_index.eq(header_index + 1)
                    with m.If(header_index == 4):
                        sender.goto("PAYLOAD")
            with sender.case("PAYLOAD"):
                is_result = tx_type == FrameType.RESULT
                need_beat = is_result & (out_bytes_left == 0)
                with m.If(need_beat):
                    m.d.comb += self.from_design.ready.eq(1)
                    with m.If(self.from_design.valid):
                        m.d.sync += [out_shift.eq(self.from_design.payload), out_bytes_left.eq(g.out.beat_bytes)]
                with m.Else():
                    m.d.comb += tx_byte.eq(
                        Mux(
                            tx_type == FrameType.ERROR,
                            tx_code,
                            Mux(
                                tx_type == FrameType.INFO_REPLY,
                                info_rom[tx_index[: rom_size.bit_length() - 1]],
                                out_shift[:8],
                            ),
                        )
                    )
                    m.d.comb += uart_tx.data.valid.eq(1)
                    with m.If(sent):
                        m.d.sync += [tx_crc.eq(crc16_next(tx_crc, tx_byte)), tx_index.eq(tx_index + 1)]
                        with m.If(is_result):
                            m.d.sync += [out_shift.eq(out_shift >> 8), out_bytes_left.eq(out_bytes_left - 1)]
                        with m.If(tx_index == tx_length - 1):
                            sender.goto("CRC0")
            with sender.case("CRC0"):
                m.d.comb += [tx_byte.eq(tx_crc[:8]), uart_tx.data.valid.eq(1)]
                with m.If(sent):
                    sender.goto("CRC1")
            with sender.case("CRC1"):
                m.d.comb += [tx_byte.eq(tx_crc[8:]), uart_tx.data.valid.eq(1)]
                with m.If(sent):
                    sender.goto("IDLE")
        return m


class BridgedDesign(wiring.Component):
    """A design (any component with `inp` and `out` streams) behind a UART bridge: only `rx` and `tx` remain."""

    def __init__(self, design: wiring.Component, p: BridgeParams):
        self.design, self.p = design, p
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = UartBridge(self.p)
        m.submodules.design = design = self.design
        m.d.comb += [
            bridge.rx.eq(self.rx),
            self.tx.eq(bridge.tx),
            Value.cast(design.inp.payload).eq(bridge.to_design.payload),
            design.inp.valid.eq(bridge.to_design.valid),
            bridge.to_design.ready.eq(design.inp.ready),
            bridge.from_design.payload.eq(Value.cast(design.out.payload)),
            bridge.from_design.valid.eq(design.out.valid),
            design.out.ready.eq(bridge.from_design.ready),
        ]
        return m
