"""cocotb drivers for Amaranth `stream.Signature` ports, and payload packing that matches Amaranth layouts.

Amaranth flattens a component's stream port `a` into the Verilog ports `a__payload`, `a__valid` and
`a__ready`. `StreamSource` drives an `In` stream of the DUT, `StreamSink` takes an `Out` stream; both record
the clock cycle of every transfer so testbenches can measure latency and throughput exactly.

Timing, once for all drivers: right after rising edge k the drivers set their outputs for cycle k; in the
read-only phase of that same time step every signal of cycle k has settled, so `valid & ready` seen there is
exactly what the DUT's flip-flops will sample at rising edge k+1. A transfer seen then is recorded as
cycle k (the count of rising edges since the shared ClockCounter started). Sampling once per cycle in the
read-only phase does not depend on whether a simulator shows pre- or post-edge register values when a
RisingEdge trigger fires, which differs between simulators. The tests check the recorded cycles against
Amaranth's own simulator, transfer for transfer, under random bubbles and back-pressure.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import cocotb
from cocotb.triggers import Event, NextTimeStep, ReadOnly, RisingEdge
from cocotb.types import LogicArray

# --- payload packing ---------------------------------------------------------------------------------


def _to_field(value: int, width: int, what: str) -> int:
    value = int(value)
    if width < 1:
        raise ValueError(f"width={width} of {what} is out of range: allowed >= 1")
    if not -(1 << (width - 1)) <= value < (1 << width):
        raise ValueError(f"{what}={value} does not fit in {width} bits")
    return value & ((1 << width) - 1)


def _from_field(bits: int, width: int, signed: bool) -> int:
    if signed and bits >> (width - 1) & 1:
        return bits - (1 << width)
    return bits


def pack_lanes(values: Iterable[int], width: int) -> int:
    """Lanes of `width` bits into one int, lane 0 at the LSB (Amaranth `data.ArrayLayout` order).

    Signed and unsigned values are both accepted (two's complement); a value that fits neither raises.
    """
    packed = 0
    for index, value in enumerate(values):
        packed |= _to_field(value, width, f"lane {index}") << (index * width)
    return packed


def unpack_lanes(packed: int, width: int, count: int, signed: bool = False) -> list[int]:
    """The inverse of `pack_lanes`: `count` lanes of `width` bits, lane 0 from the LSB."""
    mask = (1 << width) - 1
    return [_from_field((packed >> (index * width)) & mask, width, signed) for index in range(count)]


def pack_fields(values: Mapping[str, int], widths: Mapping[str, int]) -> int:
    """Fields into one int, the first field of `widths` at the LSB (Amaranth `data.StructLayout` order).

    `widths` maps field name to bit width in declaration order; `values` must name exactly those fields.
    A field that is itself an array is packed first with `pack_lanes`.
    """
    unknown = set(values) - set(widths)
    missing = set(widths) - set(values)
    if unknown or missing:
        raise ValueError(f"fields do not match the layout: unknown {sorted(unknown)}, missing {sorted(missing)}")
    packed, offset = 0, 0
    for name, width in widths.items():
        packed |= _to_field(values[name], width, name) << offset
        offset += width
    return packed


def unpack_fields(packed: int, widths: Mapping[str, int], signed: Iterable[str] = ()) -> dict[str, int]:
    """The inverse of `pack_fields`; fields named in `signed` are read as two's complement."""
    signed = set(signed)
    values, offset = {}, 0
    for name, width in widths.items():
        values[name] = _from_field((packed >> offset) & ((1 << width) - 1), width, name in signed)
        offset += width
    return values


# --- signal access -----------------------------------------------------------------------------------


def _is_high(value) -> bool:
    """True only for a resolved 1 (an X or Z valid/ready counts as no transfer)."""
    return str(value) == "1"


def _read_unsigned(handle) -> int:
    value = handle.value
    if isinstance(value, LogicArray):
        if not value.is_resolvable:
            raise ValueError(f"{handle._path} carries unresolved bits {value} during a transfer")
        return value.to_unsigned()
    if str(value) not in ("0", "1"):
        raise ValueError(f"{handle._path} carries unresolved bit {value} during a transfer")
    return int(value)


def _stream_ports(dut, name: str):
    try:
        return (getattr(dut, f"{name}__payload"), getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__ready"))
    except AttributeError as e:
        raise AttributeError(
            f"{dut._name} has no stream {name!r}: expected ports {name}__payload, {name}__valid, {name}__ready"
        ) from e


# --- cycle counting ----------------------------------------------------------------------------------


class ClockCounter:
    """Counts rising edges of `clock` from the moment it starts.

    Drivers on one clock share one counter (`ClockCounter.of(clock)`), so their recorded cycles are
    directly comparable. cocotb ends a test's tasks when the test ends; `of` then starts a new counter.
    """

    _shared: dict[int, ClockCounter] = {}

    def __init__(self, clock):
        self.clock = clock
        self.cycles = 0
        self._task = cocotb.start_soon(self._count())

    @classmethod
    def of(cls, clock) -> ClockCounter:
        counter = cls._shared.get(id(clock))
        if counter is None or counter._task.done():
            counter = cls._shared[id(clock)] = cls(clock)
        return counter

    async def _count(self):
        while True:
            await RisingEdge(self.clock)
            self.cycles += 1


# --- reset -------------------------------------------------------------------------------------------


async def reset(dut, clock, *, sources: tuple[str, ...] = (), sinks: tuple[str, ...] = (), cycles: int = 3) -> None:
    """Hold `rst` for `cycles` rising edges with the named streams idle (valid and ready low)."""
    dut.rst.value = 1
    for name in sources:
        getattr(dut, f"{name}__valid").value = 0
    for name in sinks:
        getattr(dut, f"{name}__ready").value = 0
    for _ in range(cycles):
        await RisingEdge(clock)
    dut.rst.value = 0


# --- drivers -----------------------------------------------------------------------------------------


class StreamSource:
    """Drives the DUT's `In` stream `name`: payloads given to `send` go out in order, one per transfer.

    Before each beat, valid stays low for a cycle with probability 1 - `valid_probability` (bubbles);
    once valid is high it stays high, and the payload stays stable, until the transfer, as the stream
    protocol requires. With `offers`, beat i is not presented before cycle `offers[i]` counted from the
    source's first cycle (inputs arriving on a schedule). Every beat's first presentation is recorded in
    `offer_cycles`, its transfer in `transfer_cycles`, both in ClockCounter cycles: this is the `offered` /
    `accepted` pair the blocks' schedule models take and return. Start sending after the DUT's reset is
    released: a transfer seen during reset would be counted though the DUT drops it.
    """

    def __init__(
        self,
        dut,
        name: str,
        clock,
        *,
        valid_probability: float = 1.0,
        seed: int = 0,
        counter: ClockCounter | None = None,
        offers: list[int] | None = None,
    ):
        if not 0.0 < valid_probability <= 1.0:
            raise ValueError(f"valid_probability={valid_probability} is out of range: allowed (0, 1]")
        self.name = name
        self.payload, self.valid, self.ready = _stream_ports(dut, name)
        self.clock = clock
        self.counter = counter or ClockCounter.of(clock)
        self.valid_probability = valid_probability
        self.offers = offers
        self._random = random.Random(seed)
        self._queue: deque[int] = deque()
        self._idle = Event()
        self._idle.set()
        self.sent: list[int] = []
        self.offer_cycles: list[int] = []
        self.transfer_cycles: list[int] = []
        self.valid.value = 0
        self._task = cocotb.start_soon(self._drive())

    def send(self, payload: int) -> None:
        """Queue one beat."""
        self._queue.append(int(payload))
        self._idle.clear()

    def send_all(self, payloads: Iterable[int]) -> None:
        for payload in payloads:
            self.send(payload)

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    async def wait_idle(self) -> None:
        """Return once every queued beat has been transferred."""
        if not self._idle.is_set():
            await self._idle.wait()
            await NextTimeStep()  # leave the read-only phase the transfer was seen in

    def _due(self, start: int) -> bool:
        index = len(self.sent)
        return self.offers is None or index >= len(self.offers) or self.counter.cycles - start >= self.offers[index]

    async def _drive(self):
        current, start = None, None
        while True:
            await RisingEdge(self.clock)
            if start is None:
                start = self.counter.cycles
            presented = False
            if current is None and self._queue and self._due(start) and self._random.random() < self.valid_probability:
                current = self._queue.popleft()
                self.payload.value = current
                presented = True
            self.valid.value = int(current is not None)
            await ReadOnly()
            if presented:
                self.offer_cycles.append(self.counter.cycles)
            if current is not None and _is_high(self.ready.value):
                self.sent.append(current)
                self.transfer_cycles.append(self.counter.cycles)
                current = None
                if not self._queue:
                    self._idle.set()


class StreamSink:
    """Takes the DUT's `Out` stream `name`: every transferred payload is kept, with its cycle, in order.

    Ready is high in a cycle with probability `ready_probability`, drawn independently every cycle
    (the stream protocol lets a sink change ready at will).
    """

    def __init__(
        self,
        dut,
        name: str,
        clock,
        *,
        ready_probability: float = 1.0,
        seed: int = 0,
        counter: ClockCounter | None = None,
    ):
        if not 0.0 < ready_probability <= 1.0:
            raise ValueError(f"ready_probability={ready_probability} is out of range: allowed (0, 1]")
        self.name = name
        self.payload, self.valid, self.ready = _stream_ports(dut, name)
        self.clock = clock
        self.counter = counter or ClockCounter.of(clock)
        self.ready_probability = ready_probability
        self._random = random.Random(seed)
        self.received: list[int] = []
        self.transfer_cycles: list[int] = []
        self._taken = 0
        self._arrived = Event()
        self.ready.value = 0
        self._task = cocotb.start_soon(self._drive())

    async def take(self, count: int) -> list[int]:
        """The next `count` payloads not yet taken, waiting for them to arrive."""
        waited = False
        while len(self.received) - self._taken < count:
            self._arrived.clear()
            await self._arrived.wait()
            waited = True
        if waited:
            await NextTimeStep()  # leave the read-only phase the transfer was seen in
        beats = self.received[self._taken : self._taken + count]
        self._taken += count
        return beats

    async def _drive(self):
        while True:
            await RisingEdge(self.clock)
            ready = self._random.random() < self.ready_probability
            self.ready.value = int(ready)
            await ReadOnly()
            if ready and _is_high(self.valid.value):
                self.received.append(_read_unsigned(self.payload))
                self.transfer_cycles.append(self.counter.cycles)
                self._arrived.set()


def transfer_span_cycles(sources: Sequence[StreamSource], sinks: Sequence[StreamSink]) -> int:
    """Cycles from the first input transfer to the last output transfer, both included.

    For a pipeline of latency L fed one beat per cycle with n beats this is n + L.
    """
    first = min(s.transfer_cycles[0] for s in sources if s.transfer_cycles)
    last = max(s.transfer_cycles[-1] for s in sinks if s.transfer_cycles)
    return last - first + 1
