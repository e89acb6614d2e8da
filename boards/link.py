"""The host link's framing: one frame format, pure Python, used by the host driver and by the tests alike.

A frame, in either direction, is

    SYNC (0xA5) | type (1) | sequence (1) | length (2, little-endian) | payload (length) | CRC-16 (2, LE)

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR; the
standard library's `binascii.crc_hqx(data, 0xFFFF)`) over type, sequence, length and payload. The board's
bridge (boards/uart.py) computes the same CRC a byte per cycle.

Host -> board: INFER carries one inference's input beats, each beat packed little-endian into
ceil(lanes x width / 8) bytes; INFO asks for the design's geometry. Board -> host: RESULT carries one
inference's output beats packed the same way, with the sequence number of the INFER frame it answers;
INFO_REPLY the geometry; ERROR a one-byte code (below) with the sequence number of the offending frame
(0xFF when none was read). Every malformed frame is answered with exactly one ERROR; after an error the
bridge discards bytes until the line has been idle for `drain_idle_bytes` byte times, so the rest of a
broken frame cannot be mistaken for a new one. The host resends the frame after that idle time.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

SYNC = 0xA5
HEADER_BYTES = 5  # sync, type, sequence, length (2)
CRC_BYTES = 2
OVERHEAD_BYTES = HEADER_BYTES + CRC_BYTES
NO_SEQUENCE = 0xFF
UART_BITS_PER_BYTE = 10  # start bit, 8 data bits, stop bit
DEFAULT_BAUD = 115_200


class FrameType(IntEnum):
    INFER = 0x01
    INFO = 0x02
    RESULT = 0x81
    INFO_REPLY = 0x82
    ERROR = 0xEE


class ErrorCode(IntEnum):
    BAD_CRC = 1  # the CRC did not match: the frame was corrupted on the line
    BAD_LENGTH = 2  # the length is not the one the design takes (too long, too short)
    BAD_TYPE = 3  # a frame type the board does not know
    NO_SYNC = 4  # a byte outside any frame that is not the sync byte
    TIMEOUT = 5  # the host stalled in the middle of a frame
    OVERRUN = 6  # bytes arrived faster than the bridge could take them (receive FIFO full)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of `data`."""
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def encode(frame_type: int, sequence: int, payload: bytes = b"") -> bytes:
    """The bytes of one frame."""
    payload = bytes(payload)
    if not 0 <= sequence <= 0xFF:
        raise ValueError(f"sequence={sequence!r} is out of range: allowed 0..255")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes is out of range: allowed 0..65535")
    body = bytes([int(frame_type), sequence]) + len(payload).to_bytes(2, "little") + payload
    return bytes([SYNC]) + body + crc16(body).to_bytes(2, "little")


@dataclass(frozen=True)
class Frame:
    type: int
    sequence: int
    payload: bytes

    @property
    def error_code(self) -> ErrorCode | int | None:
        if self.type != FrameType.ERROR or not self.payload:
            return None
        try:
            return ErrorCode(self.payload[0])
        except ValueError:
            return self.payload[0]


@dataclass(frozen=True)
class Garbage:
    """Bytes the decoder had to throw away, and why (a bad CRC, bytes outside a frame, an oversized length)."""

    data: bytes
    reason: str


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole frames (and what it discarded) back.

    A frame whose CRC fails is reported as Garbage and decoding resumes one byte after its sync byte, so a
    sync byte inside a corrupted frame cannot hide the next good frame."""

    def __init__(self, max_payload: int = 0xFFFF):
        self.max_payload = max_payload
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame | Garbage]:
        self.buffer += data
        out: list[Frame | Garbage] = []
        while self.buffer:
            if self.buffer[0] != SYNC:
                skip = self.buffer.find(SYNC)
                skip = len(self.buffer) if skip < 0 else skip
                out.append(Garbage(bytes(self.buffer[:skip]), "bytes outside a frame"))
                del self.buffer[:skip]
                continue
            if len(self.buffer) < HEADER_BYTES:
                break
            length = int.from_bytes(self.buffer[3:5], "little")
            if length > self.max_payload:
                out.append(Garbage(bytes(self.buffer[:1]), f"length {length} > {self.max_payload}"))
                del self.buffer[:1]
                continue
            total = HEADER_BYTES + length + CRC_BYTES
            if len(self.buffer) < total:
                break
            body = bytes(self.buffer[1 : HEADER_BYTES + length])
            crc = int.from_bytes(self.buffer[HEADER_BYTES + length : total], "little")
            if crc != crc16(body):
                out.append(Garbage(bytes(self.buffer[:1]), "bad CRC"))
                del self.buffer[:1]
                continue
            out.append(Frame(body[0], body[1], body[4:]))
            del self.buffer[:total]
        return out


def decode_all(data: bytes, max_payload: int = 0xFFFF) -> list[Frame]:
    """Every whole, CRC-checked frame in `data` (a convenience for tests and logs)."""
    return [item for item in FrameDecoder(max_payload).feed(data) if isinstance(item, Frame)]


# ---------------------------------------------------------------------------------------------------------------
# The design's geometry: how beats of lanes pack into a frame's bytes


@dataclass(frozen=True)
class StreamGeometry:
    """One stream of the design: `beats` per inference, `lanes` elements of `width` bits per beat."""

    beats: int
    lanes: int
    width: int
    signed: bool = False

    @property
    def beat_bits(self) -> int:
        return self.lanes * self.width

    @property
    def beat_bytes(self) -> int:
        return (self.beat_bits + 7) // 8

    @property
    def payload_bytes(self) -> int:
        return self.beats * self.beat_bytes

    def to_dict(self) -> dict:
        return {"beats": self.beats, "lanes": self.lanes, "width": self.width, "signed": self.signed}


def pack(geometry: StreamGeometry, elements) -> bytes:
    """One inference's elements (beats x lanes integers, in stream order) -> payload bytes."""
    values = np.asarray(elements, dtype=np.int64).reshape(-1)
    expected = geometry.beats * geometry.lanes
    if values.size != expected:
        raise ValueError(f"{values.size} elements given: the stream takes {expected} per inference")
    lo = -(1 << (geometry.width - 1)) if geometry.signed else 0
    hi = (1 << (geometry.width - 1)) - 1 if geometry.signed else (1 << geometry.width) - 1
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"elements outside {lo}..{hi}, the range of the stream's {geometry.width}-bit lanes")
    mask = (1 << geometry.width) - 1
    out = bytearray()
    for beat in values.reshape(geometry.beats, geometry.lanes).tolist():
        word = 0
        for lane, value in enumerate(beat):
            word |= (int(value) & mask) << (lane * geometry.width)
        out += word.to_bytes(geometry.beat_bytes, "little")
    return bytes(out)


def unpack(geometry: StreamGeometry, payload: bytes) -> np.ndarray:
    """Payload bytes -> one inference's elements (beats x lanes integers, sign-extended if signed)."""
    if len(payload) != geometry.payload_bytes:
        raise ValueError(f"{len(payload)} payload bytes: the stream gives {geometry.payload_bytes} per inference")
    mask = (1 << geometry.width) - 1
    values = []
    for beat in range(geometry.beats):
        chunk = payload[beat * geometry.beat_bytes : (beat + 1) * geometry.beat_bytes]
        word = int.from_bytes(chunk, "little")
        for lane in range(geometry.lanes):
            value = (word >> (lane * geometry.width)) & mask
            if geometry.signed and value >> (geometry.width - 1):
                value -= 1 << geometry.width
            values.append(value)
    return np.asarray(values, dtype=np.int64)


@dataclass(frozen=True)
class LinkGeometry:
    """What the bridge of one design exchanges per inference (sent back in INFO_REPLY)."""

    inp: StreamGeometry
    out: StreamGeometry

    def info_payload(self) -> bytes:
        """INFO_REPLY payload: magic 'HW', version 1, then per stream beats (2), lanes (2), width (1), signed (1)."""
        body = b"HW" + bytes([1])
        for s in (self.inp, self.out):
            body += s.beats.to_bytes(2, "little") + s.lanes.to_bytes(2, "little") + bytes([s.width, int(s.signed)])
        return body

    @classmethod
    def from_info_payload(cls, payload: bytes) -> LinkGeometry:
        if len(payload) != 15 or payload[:3] != b"HW\x01":
            raise ValueError(f"not a hardwire bridge INFO reply: {payload.hex()}")

        def stream_at(offset):
            return StreamGeometry(
                int.from_bytes(payload[offset : offset + 2], "little"),
                int.from_bytes(payload[offset + 2 : offset + 4], "little"),
                payload[offset + 4],
                bool(payload[offset + 5]),
            )

        return cls(stream_at(3), stream_at(9))

    def to_dict(self) -> dict:
        return {"inp": self.inp.to_dict(), "out": self.out.to_dict()}


def inferences_per_second(
    geometry: LinkGeometry, baud: int, *, compute_s: float = 0.0, pipelined: bool = False
) -> float:
    """End-to-end inferences/s over the UART link from the protocol's bytes and the baud rate.

    Stop-and-wait (the driver's mode): the INFER frame, `compute_s` (the board's turnaround from the last
    byte in to the first byte out, boards.uart.turnaround_cycles) and the RESULT frame follow one another.
    Pipelined (the next INFER on the line while the RESULT comes back; the line is full duplex): the slower
    direction or `compute_s` (then the design's initiation interval) sets the rate."""
    byte_s = UART_BITS_PER_BYTE / baud
    send_s = (OVERHEAD_BYTES + geometry.inp.payload_bytes) * byte_s
    receive_s = (OVERHEAD_BYTES + geometry.out.payload_bytes) * byte_s
    if pipelined:
        return 1.0 / max(send_s, receive_s, compute_s)
    return 1.0 / (send_s + compute_s + receive_s)
