"""The host driver: inferences over a serial port to a board running the UART bridge (boards/uart.py).

Stop-and-wait with retransmission, in boards/link.py's frames: each INFER frame carries a sequence number;
the driver waits for the RESULT with that number. An ERROR frame, a reply that never comes or a corrupted
reply makes it wait out the bridge's drain time and send the frame again (up to `retries` times); a RESULT
for an older sequence number (the answer to a frame sent twice) is dropped, so each inference's result is
returned exactly once. The port is anything with pyserial's `write`, `read` and `timeout`.
"""

from __future__ import annotations

import time

import numpy as np

from hardwire.boards import link
from hardwire.boards.link import FrameType, LinkGeometry
from hardwire.errors import HardwireError


class LinkError(HardwireError):
    """The board did not answer, or kept answering with errors, after every retry."""


class BoardLink:
    def __init__(self, port, *, reply_timeout_s: float = 1.0, drain_s: float = 0.02, retries: int = 3):
        self.port, self.reply_timeout_s, self.drain_s, self.retries = port, reply_timeout_s, drain_s, retries
        self.decoder = link.FrameDecoder()
        self.pending: list[link.Frame] = []
        self.sequence = 0
        self.errors: list[tuple[int, int]] = []  # (sequence, code) of every ERROR frame seen
        self.discarded = 0  # stale results and garbage bytes thrown away
        self.geometry: LinkGeometry | None = None

    @classmethod
    def open(cls, url: str, baud: int, **kwargs) -> BoardLink:
        import serial

        try:
            port = serial.serial_for_url(url, baudrate=baud, timeout=0.05)
        except (serial.SerialException, ValueError) as error:
            raise LinkError(f"cannot open serial port {url}: {error}") from None
        return cls(port, **kwargs)

    def _next_frame(self, deadline: float) -> link.Frame | None:
        while not self.pending:
            if time.monotonic() > deadline:
                return None
            data = self.port.read(256)
            for item in self.decoder.feed(data):
                if isinstance(item, link.Frame):
                    self.pending.append(item)
                else:
                    self.discarded += 1
        return self.pending.pop(0)

    def _transact(self, frame_type: int, sequence: int, payload: bytes, expect: int) -> link.Frame:
        frame = link.encode(frame_type, sequence, payload)
        for attempt in range(self.retries + 1):
            self.port.write(frame)
            deadline = time.monotonic() + self.reply_timeout_s
            while True:
                reply = self._next_frame(deadline)
                if reply is None:
                    break  # no answer: resend
                if reply.type == FrameType.ERROR:
                    self.errors.append((reply.sequence, reply.payload[0] if reply.payload else -1))
                    if reply.sequence in (sequence, link.NO_SEQUENCE):
                        break  # our frame was refused: resend after the drain
                    continue
                if reply.type == expect and (expect != FrameType.RESULT or reply.sequence == sequence):
                    return reply
                self.discarded += 1  # a late answer to an earlier attempt
            time.sleep(self.drain_s)
        raise LinkError(
            f"no valid answer from the board after {self.retries + 1} attempts "
            f"(errors seen: {self.errors[-(self.retries + 1) :]})"
        )

    def info(self) -> LinkGeometry:
        reply = self._transact(FrameType.INFO, 0, b"", FrameType.INFO_REPLY)
        self.geometry = LinkGeometry.from_info_payload(reply.payload)
        return self.geometry

    def infer(self, elements: np.ndarray) -> np.ndarray:
        """Integer inputs (inferences x elements per inference) -> integer outputs (inferences x outputs)."""
        geometry = self.geometry or self.info()
        outputs = []
        for row in np.asarray(elements).reshape(len(elements), -1):
            reply = self._transact(FrameType.INFER, self.sequence, link.pack(geometry.inp, row), FrameType.RESULT)
            outputs.append(link.unpack(geometry.out, reply.payload))
            self.sequence = (self.sequence + 1) % 255  # 0xFF means "no sequence" in ERROR frames
        return np.stack(outputs) if outputs else np.zeros((0, geometry.out.beats * geometry.out.lanes), np.int64)
