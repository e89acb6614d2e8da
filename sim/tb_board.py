"""cocotb testbench of a whole board top: a design behind the UART bridge, driven at the bit level on its pins.

The host side is boards/link.py's framing, the same code the host driver uses: frames are encoded with
`link.encode` and the board's replies decoded by `link.FrameDecoder` from the bits sampled on `tx`. The
config lists the inferences' payloads and, per inference, an optional fault to inject before the good frame
is sent (a flipped bit, a wrong length, an overlong payload, a stall mid-frame, a corrupted sync byte, an
unknown type). Every fault must be answered by exactly one ERROR frame with the expected code; then the host
waits for the bridge's drain time and resends. Some inferences are sent two at a time (the next frame on the
line while the previous result comes back). Every RESULT frame goes back in results.json; the caller checks
the payloads against qonnx and that each sequence number came back exactly once.
"""

from __future__ import annotations

import cocotb
from cocotb.clock import Clock
from cocotb.queue import Queue
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotb.utils import get_sim_time

from hardwire.boards import link
from hardwire.boards.host import BoardLink
from hardwire.boards.link import ErrorCode, FrameType
from hardwire.sim.runner import load_config, write_results

CLOCK_NS = 10
CONFIG = load_config()


class UartHost:
    """The PC's end of the serial line, bit by bit: send bytes on `rx`, decode frames from `tx`."""

    def __init__(self, dut, clocks_per_bit: int):
        self.dut, self.cpb = dut, clocks_per_bit
        self.decoder = link.FrameDecoder()
        self.frames: Queue = Queue()
        self.garbage: list[str] = []
        self.received_bytes = 0
        self.raw = bytearray()  # every received byte, for the host driver's port

    async def send(self, data: bytes) -> None:
        for byte in data:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await ClockCycles(self.dut.clk, self.cpb)

    async def monitor(self) -> None:
        while True:
            await RisingEdge(self.dut.clk)
            if int(self.dut.tx.value) != 0:
                continue
            await ClockCycles(self.dut.clk, self.cpb // 2)
            assert int(self.dut.tx.value) == 0, "start bit glitch on tx"
            byte = 0
            for i in range(8):
                await ClockCycles(self.dut.clk, self.cpb)
                byte |= int(self.dut.tx.value) << i
            await ClockCycles(self.dut.clk, self.cpb)
            assert int(self.dut.tx.value) == 1, "missing stop bit on tx"
            self.received_bytes += 1
            self.raw.append(byte)
            for item in self.decoder.feed(bytes([byte])):
                if isinstance(item, link.Frame):
                    self.frames.put_nowait(item)
                else:
                    self.garbage.append(f"{item.reason}: {item.data.hex()}")

    async def reply(self, timeout_cycles: int) -> link.Frame:
        return await with_timeout(self.frames.get(), timeout_cycles * CLOCK_NS, "ns")


def faulty_frame(fault: str, sequence: int, payload: bytes) -> bytes:
    """The bytes of a broken version of the INFER frame (sequence, payload)."""
    good = link.encode(FrameType.INFER, sequence, payload)
    if fault == "flipped_bit":
        broken = bytearray(good)
        broken[5 + len(payload) // 2] ^= 0x10
        return bytes(broken)
    if fault == "overlong":
        return link.encode(FrameType.INFER, sequence, payload + bytes(5))
    if fault == "short":
        return link.encode(FrameType.INFER, sequence, payload[:-1])
    if fault == "bad_sync":
        return bytes([link.SYNC ^ 0x80]) + good[1:]
    if fault == "bad_type":
        return link.encode(0x33, sequence, payload)
    if fault == "stall":
        return good[: len(good) // 2]
    raise ValueError(f"unknown fault {fault!r}")


EXPECTED_CODE = {
    "flipped_bit": ErrorCode.BAD_CRC,
    "overlong": ErrorCode.BAD_LENGTH,
    "short": ErrorCode.BAD_LENGTH,
    "bad_sync": ErrorCode.NO_SYNC,
    "bad_type": ErrorCode.BAD_TYPE,
    "stall": ErrorCode.TIMEOUT,
}


class SimPort:
    """pyserial's `write` / `read` on the simulated pins, so the real host driver (boards/host.py) runs in a
    cocotb bridge thread against the RTL: each call blocks the thread while the simulation runs it."""

    def __init__(self, host: UartHost, idle_cycles: int):
        self.host, self.idle_cycles = host, idle_cycles

    def write(self, data: bytes) -> None:
        resume(self.host.send)(bytes(data))

    def read(self, size: int) -> bytes:
        return resume(self._read)(size)

    async def _read(self, size: int) -> bytes:
        if not self.host.raw:
            await ClockCycles(self.host.dut.clk, self.idle_cycles)
        data = bytes(self.host.raw[:size])
        del self.host.raw[:size]
        return data


async def _start(dut, cpb: int) -> UartHost:
    dut.rx.value = 1
    dut.rst.value = 1
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    host = UartHost(dut, cpb)
    cocotb.start_soon(host.monitor())
    return host


@cocotb.test()
async def host_driver_runs_inferences(dut):
    """The driver behind `hardwire run`, unchanged, on the simulated board (its port is the pins)."""
    cpb = CONFIG["clocks_per_bit"]
    rows = CONFIG.get("driver_inputs", [])
    host = await _start(dut, cpb)

    @bridge
    def drive():
        driver = BoardLink(SimPort(host, 40 * cpb), reply_timeout_s=600, drain_s=0.0)
        geometry = driver.info()
        return geometry.to_dict(), driver.infer(rows).tolist(), driver.errors

    geometry, outputs, errors = await drive()
    write_results({"driver": {"geometry": geometry, "outputs": outputs, "errors": errors}})


@cocotb.test()
async def board_link_runs_every_inference_once(dut):
    cpb = CONFIG["clocks_per_bit"]
    drain = CONFIG["drain_idle_cycles"]
    stall = CONFIG["stall_timeout_cycles"]
    payloads = [bytes.fromhex(h) for h in CONFIG["payloads"]]
    faults = {int(k): v for k, v in CONFIG.get("faults", {}).items()}
    paired = set(CONFIG.get("paired", []))  # inference i sent together with i + 1
    reply_cycles = CONFIG["reply_timeout_cycles"]

    host = await _start(dut, cpb)

    await host.send(link.encode(FrameType.INFO, 0))
    info = await host.reply(reply_cycles)
    assert info.type == FrameType.INFO_REPLY, f"INFO answered by {info}"

    results: list[dict] = []
    errors: list[dict] = []
    transaction_cycles: list[int] = []  # stop-and-wait: first bit sent to the reply's last stop bit

    def record(frame):
        if frame.type == FrameType.RESULT:
            results.append({"sequence": frame.sequence, "payload": frame.payload.hex()})
        elif frame.type == FrameType.ERROR:
            errors.append({"sequence": frame.sequence, "code": int(frame.payload[0])})
        else:
            raise AssertionError(f"unexpected frame {frame}")
        return frame

    index = 0
    while index < len(payloads):
        sequence = index % 256
        fault = faults.get(index)
        if fault is not None:
            await host.send(faulty_frame(fault, sequence, payloads[index]))
            if fault == "stall":
                pass  # the host goes quiet mid-frame; the bridge must time out
            reply = record(await host.reply(reply_cycles + stall))
            assert reply.type == FrameType.ERROR, f"fault {fault} answered by {reply}"
            assert reply.error_code == EXPECTED_CODE[fault], f"fault {fault} answered with {reply.error_code!r}"
            expected_sequence = link.NO_SEQUENCE if fault == "bad_sync" else sequence
            assert reply.sequence == expected_sequence, f"fault {fault}: error names sequence {reply.sequence}"
            await ClockCycles(dut.clk, drain + 20 * cpb)  # the bridge drains until the line is idle
        if index in paired and index + 1 < len(payloads):
            await host.send(link.encode(FrameType.INFER, sequence, payloads[index]))
            await host.send(link.encode(FrameType.INFER, (index + 1) % 256, payloads[index + 1]))
            for expected in (sequence, (index + 1) % 256):
                reply = record(await host.reply(reply_cycles))
                assert reply.type == FrameType.RESULT and reply.sequence == expected, f"{reply} for {expected}"
            index += 2
            continue
        started_ns = get_sim_time("ns")
        await host.send(link.encode(FrameType.INFER, sequence, payloads[index]))
        reply = record(await host.reply(reply_cycles))
        assert reply.type == FrameType.RESULT and reply.sequence == sequence, f"{reply} for inference {index}"
        transaction_cycles.append(round((get_sim_time("ns") - started_ns) / CLOCK_NS))
        index += 1

    await ClockCycles(dut.clk, 4 * reply_cycles // 3)  # nothing may follow
    while not host.frames.empty():
        record(host.frames.get_nowait())
    write_results(
        {
            "info": info.payload.hex(),
            "results": results,
            "errors": errors,
            "garbage": host.garbage,
            "received_bytes": host.received_bytes,
            "transaction_cycles": transaction_cycles,
        }
    )
