"""The host link's framing (boards/link.py): frames round-trip, the CRC is the standard CRC-16/CCITT-FALSE, every
kind of corruption is caught, and beats pack into bytes the way the bridge unpacks them."""

from __future__ import annotations

import numpy as np
import pytest

from hardwire.boards import link
from hardwire.boards.link import FrameDecoder, FrameType, Garbage, LinkGeometry, StreamGeometry


def test_crc_is_crc16_ccitt_false_on_the_standard_check_string():
    # the catalogue's check value of CRC-16/CCITT-FALSE (a.k.a. CRC-16/IBM-3740) for "123456789"
    assert link.crc16(b"123456789") == 0x29B1


def _bitwise_crc(data: bytes) -> int:
    """The CRC computed bit by bit from its definition, independent of binascii."""
    crc = 0xFFFF
    for byte in data:
        for bit in range(7, -1, -1):
            feedback = ((crc >> 15) ^ (byte >> bit)) & 1
            crc = ((crc << 1) & 0xFFFF) ^ (0x1021 if feedback else 0)
    return crc


def test_crc_matches_its_bitwise_definition_on_random_data():
    rng = np.random.default_rng(1)
    for n in (0, 1, 2, 7, 64, 300):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert link.crc16(data) == _bitwise_crc(data)


def test_frame_layout_and_round_trip():
    frame = link.encode(FrameType.INFER, 7, b"\x01\x02\xa5")
    assert frame[:5] == bytes([0xA5, 0x01, 7, 3, 0])
    assert frame[5:8] == b"\x01\x02\xa5"
    assert int.from_bytes(frame[8:], "little") == _bitwise_crc(frame[1:8])
    decoded = link.decode_all(frame)
    assert decoded == [link.Frame(FrameType.INFER, 7, b"\x01\x02\xa5")]


def test_decoder_takes_frames_split_at_every_byte_boundary():
    frames = [link.encode(FrameType.RESULT, s, bytes([s] * s)) for s in range(6)]
    data = b"".join(frames)
    decoder = FrameDecoder()
    got = []
    for i in range(len(data)):
        got += decoder.feed(data[i : i + 1])
    assert [(f.sequence, f.payload) for f in got] == [(s, bytes([s] * s)) for s in range(6)]


@pytest.mark.parametrize("position", range(12))
def test_any_single_flipped_bit_is_caught_and_the_next_frame_still_decodes(position):
    good = link.encode(FrameType.INFER, 3, b"\x10\x20\x30\x40\x50")
    rng = np.random.default_rng(position)
    bad = bytearray(good)
    bad[position] ^= 1 << int(rng.integers(0, 8))
    following = link.encode(FrameType.INFER, 4, b"\x01")
    items = FrameDecoder(max_payload=64).feed(bytes(bad) + following)
    frames = [i for i in items if isinstance(i, link.Frame)]
    assert frames == [link.Frame(FrameType.INFER, 4, b"\x01")]
    assert any(isinstance(i, Garbage) for i in items)


def test_overlong_length_is_discarded_not_waited_for():
    overlong = bytes([0xA5, 0x01, 0, 0xFF, 0x7F])  # claims 32767 payload bytes
    following = link.encode(FrameType.INFO, 9)
    items = FrameDecoder(max_payload=64).feed(overlong + following)
    assert [i for i in items if isinstance(i, link.Frame)] == [link.Frame(FrameType.INFO, 9, b"")]
    assert "length 32767" in items[0].reason


def test_error_frames_name_their_code():
    frame = link.decode_all(link.encode(FrameType.ERROR, 5, bytes([link.ErrorCode.BAD_CRC])))[0]
    assert frame.error_code is link.ErrorCode.BAD_CRC
    assert frame.sequence == 5


@pytest.mark.parametrize(
    "geometry",
    [
        StreamGeometry(beats=64, lanes=1, width=4),
        StreamGeometry(beats=10, lanes=1, width=13, signed=True),
        StreamGeometry(beats=3, lanes=5, width=3, signed=True),
        StreamGeometry(beats=2, lanes=8, width=8),
    ],
)
def test_pack_unpack_round_trip_with_extremes(geometry):
    rng = np.random.default_rng(geometry.width)
    lo = -(1 << (geometry.width - 1)) if geometry.signed else 0
    hi = (1 << (geometry.width - 1)) - 1 if geometry.signed else (1 << geometry.width) - 1
    n = geometry.beats * geometry.lanes
    for values in (rng.integers(lo, hi + 1, n), np.full(n, lo), np.full(n, hi)):
        payload = link.pack(geometry, values)
        assert len(payload) == geometry.payload_bytes
        assert np.array_equal(link.unpack(geometry, payload), values)


def test_pack_is_little_endian_lane_zero_in_the_low_bits():
    geometry = StreamGeometry(beats=1, lanes=3, width=4)
    assert link.pack(geometry, [0x1, 0x2, 0x3]) == bytes([0x21, 0x03])


def test_pack_rejects_values_outside_the_lane_width():
    with pytest.raises(ValueError, match="0..15"):
        link.pack(StreamGeometry(beats=1, lanes=1, width=4), [16])


def test_info_payload_round_trip():
    geometry = LinkGeometry(StreamGeometry(64, 1, 4), StreamGeometry(10, 2, 12, True))
    assert LinkGeometry.from_info_payload(geometry.info_payload()) == geometry


def test_inferences_per_second_from_the_bytes_on_the_line():
    geometry = LinkGeometry(StreamGeometry(64, 1, 4), StreamGeometry(10, 1, 16, True))
    # 71 bytes out, 27 bytes back at 10 bits per byte
    assert link.inferences_per_second(geometry, 115200) == pytest.approx(115200 / 10 / (71 + 27))
    assert link.inferences_per_second(geometry, 115200, pipelined=True) == pytest.approx(115200 / 10 / 71)
