"""The host driver (boards/host.py) against a model of the board's bridge speaking the same frames over a fake
serial port: results come back once each and in order through refused frames, lost replies and corrupted
replies; a board that never answers is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest

from hardwire.boards import link
from hardwire.boards.host import BoardLink, LinkError
from hardwire.boards.link import ErrorCode, FrameType, LinkGeometry, StreamGeometry

GEOMETRY = LinkGeometry(StreamGeometry(4, 2, 4), StreamGeometry(2, 1, 9, True))


def golden(row):
    """What the model board computes: two signed sums of the first and second half of the inputs, minus 50."""
    row = np.asarray(row)
    return np.array([row[:4].sum() - 50, row[4:].sum() - 50])


class FakeBoard:
    """A serial port whose other end is a bridge model; `faults` maps a count of INFER frames seen to a fault."""

    def __init__(self, faults=None, silent=False):
        self.decoder = link.FrameDecoder()
        self.outgoing = bytearray()
        self.faults = dict(faults or {})
        self.infers = 0
        self.silent = silent
        self.computed = 0

    def write(self, data):
        for frame in self.decoder.feed(bytes(data)):
            assert isinstance(frame, link.Frame)
            if self.silent:
                continue
            if frame.type == FrameType.INFO:
                self.outgoing += link.encode(FrameType.INFO_REPLY, 0, GEOMETRY.info_payload())
                continue
            fault = self.faults.pop(self.infers, None)
            self.infers += 1
            if fault == "refuse":
                self.outgoing += link.encode(FrameType.ERROR, frame.sequence, bytes([ErrorCode.BAD_CRC]))
                continue
            if fault == "lose":
                continue
            self.computed += 1
            result = link.encode(
                FrameType.RESULT,
                frame.sequence,
                link.pack(GEOMETRY.out, golden(link.unpack(GEOMETRY.inp, frame.payload))),
            )
            if fault == "corrupt":
                result = result[:6] + bytes([result[6] ^ 0x01]) + result[7:]
            if fault == "duplicate":
                result = result + result
            self.outgoing += result

    def read(self, size):
        data = bytes(self.outgoing[:size])
        del self.outgoing[:size]
        return data


def test_driver_returns_each_result_once_through_every_fault():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 16, size=(12, 8))
    board = FakeBoard({1: "refuse", 3: "lose", 5: "corrupt", 7: "duplicate"})
    host = BoardLink(board, reply_timeout_s=0.05, drain_s=0.0)
    assert host.info() == GEOMETRY
    got = host.infer(x)
    assert np.array_equal(got, np.stack([golden(row) for row in x]))
    assert host.errors == [(1, ErrorCode.BAD_CRC)]
    assert host.discarded >= 2  # the corrupted reply and the duplicate


def test_silent_board_is_a_link_error():
    host = BoardLink(FakeBoard(silent=True), reply_timeout_s=0.01, drain_s=0.0, retries=1)
    with pytest.raises(LinkError, match="after 2 attempts"):
        host.info()


def test_a_port_that_cannot_open_is_a_link_error():
    with pytest.raises(LinkError, match="cannot open serial port"):
        BoardLink.open("/dev/ttyNOPE-hardwire", 115200)


def test_driver_over_pyserial_loopback_sees_its_own_frames_as_no_answer():
    # loop:// echoes the INFO frame back: an INFO, not an INFO_REPLY, so the driver keeps waiting and gives up
    host = BoardLink.open("loop://", 115200, reply_timeout_s=0.02, drain_s=0.0, retries=0)
    with pytest.raises(LinkError):
        host.info()


def _compiled_folder(tmp_path):
    """A minimal compiled-design folder (plan.json + Verilog) as `hardwire compile` writes it."""
    import json

    folder = tmp_path / "design"
    folder.mkdir()
    (folder / "plan.json").write_text(
        json.dumps(
            {
                "top": "tiny",
                "initiation_interval": 1,
                "in_lanes": 2,
                "out_lanes": 1,
                "in_width": 4,
                "in_signed": False,
                "out_width": 9,
                "out_signed": True,
                "in_beats_per_inference": 4,
                "out_beats_per_inference": 2,
            }
        )
    )
    (folder / "tiny.v").write_text("module tiny(); endmodule\n")
    return folder


def test_run_cli_errors_are_one_line(tmp_path, capsys):
    from hardwire.cli import main

    folder = _compiled_folder(tmp_path)
    codes = tmp_path / "codes.npy"
    np.save(codes, np.zeros((2, 8), dtype=np.int64))
    assert (
        main(["run", str(folder), "--board", "icebreaker", "--port", "/dev/ttyNOPE-hardwire", "--inputs", str(codes)])
        == 1
    )
    assert "cannot open serial port /dev/ttyNOPE-hardwire" in capsys.readouterr().err
    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros((2, 8), dtype=np.float32))
    assert main(["run", str(folder), "--board", "icebreaker", "--port", "loop://", "--inputs", str(floats)]) == 2
    assert "integer codes" in capsys.readouterr().err
    assert (
        main(["run", str(tmp_path / "nothing"), "--board", "icebreaker", "--port", "loop://", "--inputs", str(codes)])
        == 2
    )
    assert "hardwire compile" in capsys.readouterr().err


def test_run_cli_sends_integer_inputs_and_writes_the_outputs(tmp_path, monkeypatch, capsys):
    from hardwire.boards import host as host_module
    from hardwire.cli import main

    folder = _compiled_folder(tmp_path)  # its geometry is GEOMETRY's
    monkeypatch.setattr(
        host_module.BoardLink,
        "open",
        classmethod(lambda cls, url, baud, **kw: cls(FakeBoard({2: "refuse"}), reply_timeout_s=0.05, drain_s=0.0)),
    )
    x = np.random.default_rng(5).integers(0, 16, size=(6, 8))
    np.save(tmp_path / "x.npy", x)
    assert (
        main(
            [
                "run",
                str(folder),
                "--board",
                "icebreaker",
                "--port",
                "fake",
                "--inputs",
                str(tmp_path / "x.npy"),
                "--output",
                str(tmp_path / "y.npy"),
            ]
        )
        == 0
    )
    assert np.array_equal(np.load(tmp_path / "y.npy"), np.stack([golden(row) for row in x]))
    assert "6 inferences; 1 link errors recovered" in capsys.readouterr().out
