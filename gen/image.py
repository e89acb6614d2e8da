"""What the image-streaming blocks (sliding-window generator, max pool) share: the NHWC frame geometry, its
validation, and the check of a golden model's input image. Not a block: it registers nothing."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Signal, signed, unsigned

from hardwire.params import int_range, is_int, require

MAX_DIM = 256
MAX_CHANNELS = 4096


class ImageStreamParams:
    """Mixin for a frozen parameter dataclass with fields in_height, in_width, channels, simd, elem_width,
    elem_signed: an NHWC image streamed pixel by pixel in beats of `simd` consecutive channels."""

    def check_image_fields(self) -> None:
        for name in ("in_height", "in_width"):
            value = getattr(self, name)
            require(is_int(value) and 1 <= value <= MAX_DIM, name, value, f"1..{MAX_DIM}")
        require(
            is_int(self.channels) and 1 <= self.channels <= MAX_CHANNELS,
            "channels",
            self.channels,
            f"1..{MAX_CHANNELS}",
        )
        require(
            is_int(self.simd) and 1 <= self.simd <= self.channels and self.channels % self.simd == 0,
            "simd",
            self.simd,
            f"a divisor of channels={self.channels}",
        )
        require(is_int(self.elem_width) and 1 <= self.elem_width <= 16, "elem_width", self.elem_width, "1..16")
        require(isinstance(self.elem_signed, bool), "elem_signed", self.elem_signed, "True or False")

    @property
    def channel_beats(self) -> int:
        """Beats per pixel."""
        return self.channels // self.simd

    @property
    def beats_in(self) -> int:
        """Input beats per frame (one image)."""
        return self.in_height * self.in_width * self.channel_beats

    @property
    def elem_shape(self):
        return signed(self.elem_width) if self.elem_signed else unsigned(self.elem_width)

    def checked_image(self, image) -> np.ndarray:
        """`image` as int64 [in_height, in_width, channels], its values inside the element type."""
        x = np.asarray(image, dtype=np.int64)
        require(
            x.shape == (self.in_height, self.in_width, self.channels),
            "image shape",
            x.shape,
            f"(in_height, in_width, channels) = {(self.in_height, self.in_width, self.channels)}",
        )
        lo, hi = int_range(self.elem_width, self.elem_signed)
        require(x.min() >= lo and x.max() <= hi, "element values", (int(x.min()), int(x.max())), f"{lo}..{hi}")
        return x


def counter(count: int, name: str) -> Signal:
    """A counter over 0..count-1, at least one bit wide (a zero-width signal lints as a [-1:0] range)."""
    return Signal(range(max(count, 2)), name=name)
