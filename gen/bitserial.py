"""Stripes-style bit-serial MAC array: activations arrive one bit per cycle, weights in parallel.

Top to bottom: the parameters, the golden models, the tiling driver, the cycle model, the component.

The array is ``rows`` x ``lanes`` processing elements (PEs). PE(r, c) computes the dot product of activation
vector r with weight column c, ``simd`` elements per step:

* Row r's activations arrive as bit-planes: one beat of the ``activations`` stream carries bit b of each of
  the ``simd`` activations of a chunk, for every row, plus the dot product's run-time ``precision``
  (1..a_max bits) and ``last`` (this chunk ends the dot product). The bit-plane is broadcast along the row to
  all lanes, as Stripes broadcasts one activation bit to many filters.
* Lane c's weights arrive bit-parallel on the ``weights`` stream: one beat per chunk holds ``simd`` weights
  per lane, shared down the column by all rows; it is consumed with the chunk's last bit-plane.
* Every cycle a PE adds the weights whose activation bit is 1 (an AND gate per weight bit and an adder tree,
  ``pp``) into its chunk partial: MSB-first (Horner) ``P = 2 P + pp``, LSB-first ``P = P + (pp << b)``.
  The sign plane of a two's-complement activation (its MSB) is subtracted, not added. At the end of a
  chunk P is added into the accumulator; at the end of the dot product the sums of all rows x lanes PEs
  go out as one ``results`` beat.

So a dot product of K elements at precision p takes ceil(K / simd) * p cycles (plus a fixed latency), and a
lower precision is proportionally faster on the same hardware. ``msb_first`` chooses the bit order of
the bit-planes at generation time; ``precision`` is chosen per dot product at run time. Every bit-plane of
one dot product carries the same precision (`plan_gemm` guarantees it): the sequencer compares it with its
plane counter to find each chunk's last plane and, for signed activations, the sign plane.

Cost per PE: ``simd`` AND-gated weights and their adder tree, the chunk partial (``partial_width`` bits) and
the accumulator (``acc_width`` bits); LSB-first adds a barrel shift of the partial product (MSB-first needs
none, Horner's rule shifts the partial instead). The array never stalls: a valid bit travels with each
plane and a final plane is admitted only when the result FIFO has room reserved for its sums (credits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil

import numpy as np
from amaranth.hdl import Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.registry import Block, register

from hardwire.params import bits_for_range, int_range, is_int, product_range, require, wrap

GENERATOR_VERSION = "1"
A_MAX_LIMIT = 16

# Registers from an accepted bit-plane to its result in the FIFO: input register, partial-product
# register, chunk partial (P), accumulator add written into the FIFO; the SyncFIFOBuffered hands an entry
# written at the end of cycle t out in cycle t + 2.
PIPELINE_CYCLES = 3
FIFO_LATENCY_CYCLES = 2
LATENCY_CYCLES = PIPELINE_CYCLES + FIFO_LATENCY_CYCLES


# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class BitSerialParams:
    """A validated bit-serial array configuration. Raises ParameterError naming the bad parameter."""

    rows: int = 2
    lanes: int = 4
    simd: int = 4
    w_width: int = 8
    w_signed: bool = True
    a_max: int = 16
    a_signed: bool = True
    msb_first: bool = True
    k_max: int = 4096
    acc_width: int | None = None
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        require(is_int(self.rows) and 1 <= self.rows <= 64, "rows", self.rows, "1..64")
        require(is_int(self.lanes) and 1 <= self.lanes <= 64, "lanes", self.lanes, "1..64")
        require(is_int(self.simd) and 1 <= self.simd <= 64, "simd", self.simd, "1..64")
        require(is_int(self.w_width) and 2 <= self.w_width <= 16, "w_width", self.w_width, "2..16")
        require(is_int(self.a_max) and 1 <= self.a_max <= A_MAX_LIMIT, "a_max", self.a_max, f"1..{A_MAX_LIMIT}")
        for name in ("w_signed", "a_signed", "msb_first"):
            require(isinstance(getattr(self, name), bool), name, getattr(self, name), "True or False")
        require(is_int(self.k_max) and 1 <= self.k_max <= 1 << 20, "k_max", self.k_max, "1..1048576")
        if self.acc_width is not None:
            # narrower than the derived width wraps (mod 2^acc_width), exactly as the golden model says
            require(is_int(self.acc_width) and 2 <= self.acc_width <= 64, "acc_width", self.acc_width, "2..64")

    # -- derived -----------------------------------------------------------------------------------

    @property
    def acc_signed(self) -> bool:
        return self.a_signed or self.w_signed

    def a_range(self, precision: int | None = None) -> tuple[int, int]:
        """Activation values a dot product at `precision` bits (default a_max) may carry."""
        return int_range(precision or self.a_max, self.a_signed)

    @property
    def product_range(self) -> tuple[int, int]:
        return product_range(self.a_range(), int_range(self.w_width, self.w_signed))

    @property
    def partial_width(self) -> int:
        """Signed width of a PE's chunk partial P: any `simd`-element dot product at up to a_max bits.
        Every Horner (MSB-first) or shifted (LSB-first) intermediate is itself such a dot product, of the
        activations truncated to their leading (MSB-first) or trailing unsigned (LSB-first) bits."""
        lo, hi = self.product_range
        return bits_for_range(lo * self.simd, hi * self.simd, True)

    @property
    def pp_width(self) -> int:
        """Signed width of one cycle's partial product: a sum of up to `simd` weights."""
        w_lo, w_hi = int_range(self.w_width, self.w_signed)
        return bits_for_range(self.simd * min(w_lo, 0), self.simd * max(w_hi, 0), True)

    @property
    def derived_acc_width(self) -> int:
        """Just wide enough that a k_max-deep dot product of extreme operands cannot overflow."""
        lo, hi = self.product_range
        return bits_for_range(lo * self.k_max, hi * self.k_max, self.acc_signed)

    @property
    def acc_bits(self) -> int:
        return self.acc_width if self.acc_width is not None else self.derived_acc_width

    @property
    def precision_width(self) -> int:
        return self.a_max.bit_length()

    @property
    def fifo_depth(self) -> int:
        """Result FIFO entries: enough credits that an always-ready sink never throttles the input, even at
        one dot product per cycle (precision 1, K <= simd); + 2 as the credit check is registered."""
        return LATENCY_CYCLES + 3

    @property
    def latency_cycles(self) -> int:
        """Cycles from the handshake of a dot product's last bit-plane to its result handshake (always-ready
        sink)."""
        return LATENCY_CYCLES

    @property
    def top_name(self) -> str:
        if self.name:
            return self.name
        sign = lambda s: "s" if s else "u"
        name = (
            f"bitserial_{self.rows}x{self.lanes}_simd{self.simd}_a{self.a_max}{sign(self.a_signed)}"
            f"_w{self.w_width}{sign(self.w_signed)}_{'msb' if self.msb_first else 'lsb'}"
        )
        defaults = BitSerialParams.__dataclass_fields__
        for field_name, tag in (("k_max", "k"), ("acc_width", "acc")):
            if getattr(self, field_name) != defaults[field_name].default:
                name += f"_{tag}{getattr(self, field_name)}"
        return name

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "lanes": self.lanes,
            "simd": self.simd,
            "w_width": self.w_width,
            "w_signed": self.w_signed,
            "a_max": self.a_max,
            "a_signed": self.a_signed,
            "msb_first": self.msb_first,
            "k_max": self.k_max,
            "acc_width": self.acc_bits,
            "name": self.top_name,
        }

    @classmethod
    def from_dict(cls, values: dict) -> BitSerialParams:
        """The inverse of `to_dict` (an acc_width equal to the derived one comes back as derived)."""
        names = set(cls.__dataclass_fields__)
        given = {k: v for k, v in values.items() if k in names}
        derived = cls(**(given | {"acc_width": None}))
        if given.get("acc_width") == derived.derived_acc_width:
            return derived
        return cls(**given)


# --------------------------------------------------------------------------------------------------
# Golden models


def check_operands(p: BitSerialParams, a, w, precision: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate A[M, K] (at `precision` bits, default a_max) and W[K, N]; return them as int64."""
    a = np.asarray(a)
    w = np.asarray(w)
    require(
        a.ndim == 2 and w.ndim == 2 and a.shape[1] == w.shape[0], "shapes", (a.shape, w.shape), "A[M, K] and W[K, N]"
    )
    require(1 <= a.shape[1] <= p.k_max, "K", a.shape[1], f"1..k_max={p.k_max}")
    if precision is not None:
        require(is_int(precision) and 1 <= precision <= p.a_max, "precision", precision, f"1..a_max={p.a_max}")
    for name, x, (lo, hi) in (("A", a, p.a_range(precision)), ("W", w, int_range(p.w_width, p.w_signed))):
        require(
            x.size == 0 or (x.min() >= lo and x.max() <= hi),
            f"{name} values",
            (int(x.min()), int(x.max())) if x.size else (),
            f"{lo}..{hi}",
        )
    return a.astype(np.int64), w.astype(np.int64)


def bitserial_golden(p: BitSerialParams, a, w) -> np.ndarray:
    """Exactly what the array computes: the int64 product A @ W held in an acc_width-bit register."""
    a, w = check_operands(p, a, w)
    return wrap(a @ w, p.acc_bits, p.acc_signed)


def bit_planes(a, precision: int, a_signed: bool, msb_first: bool) -> np.ndarray:
    """The bit-planes of `a` at `precision` bits in stream order: planes[i] holds one bit (0/1) per element."""
    a = np.asarray(a, dtype=np.int64)
    order = range(precision - 1, -1, -1) if msb_first else range(precision)
    # two's complement: bit b of a negative value is bit b of (a mod 2^precision)
    unsigned_a = a & ((1 << precision) - 1)
    return np.stack([(unsigned_a >> b) & 1 for b in order]).astype(np.int64)


def serial_dot(p: BitSerialParams, a, w, precision: int) -> np.ndarray:
    """A[M, K] @ W[K, N] the way the PEs compute it: chunks of `simd`, bit-plane by bit-plane, the sign plane
    subtracted, every chunk partial checked against `partial_width` and the sum wrapped to acc_width.
    A model of the algorithm (independent of the RTL) that the tests hold against torch.matmul."""
    a, w = check_operands(p, a, w, precision)
    m_total, k_total = a.shape
    lo, hi = int_range(p.partial_width, True)
    acc = np.zeros((m_total, w.shape[1]), dtype=np.int64)
    for k0 in range(0, k_total, p.simd):
        planes = bit_planes(a[:, k0 : k0 + p.simd], precision, p.a_signed, p.msb_first)
        chunk_w = w[k0 : k0 + p.simd]
        partial = np.zeros_like(acc)
        for index, plane in enumerate(planes):
            bit = precision - 1 - index if p.msb_first else index
            pp = plane @ chunk_w  # AND gates + adder tree
            is_sign = p.a_signed and bit == precision - 1
            term = -pp if is_sign else pp
            partial = 2 * partial + term if p.msb_first else partial + (term << bit)
            if partial.size:
                assert lo <= partial.min() and partial.max() <= hi, "chunk partial overflows partial_width"
        acc = wrap(acc + partial, p.acc_bits, p.acc_signed)
    return acc


def min_precision(values, a_signed: bool) -> int:
    """Fewest bits (>= 1) that represent every value: the precision a dynamic-precision front end picks."""
    values = np.asarray(values, dtype=np.int64)
    if values.size == 0:
        return 1
    return bits_for_range(int(values.min()), int(values.max()), a_signed)


# --------------------------------------------------------------------------------------------------
# Tiling driver: any M x K x N GEMM as dot-product jobs of rows x lanes outputs


@dataclass
class BitSerialPlan:
    """Beats to send on each input stream and where each result beat belongs in Y."""

    weights: list[list[int]]  # per chunk: lanes x simd weights, lane-major (lane c, element j)
    activations: list[dict]  # per bit-plane: {"bits": [rows masks], "precision", "last"}
    results: list[tuple[int, int]]  # per result beat: (m0, n0) of its rows x lanes block of Y
    jobs: list[tuple[int, int]]  # per dot product: (chunks, precision), for the cycle model
    shape: tuple[int, int, int]


def plan_gemm(p: BitSerialParams, a, w, precision=None) -> BitSerialPlan:
    """Tile Y = A @ W onto the array: a job per (rows block m0, lanes block n0), K in chunks of simd.

    `precision`: None picks per rows block the fewest bits its activations need (dynamic precision); an int
    applies to every job; a list gives one precision per rows block (ceil(M / rows) entries).
    """
    a, w = check_operands(p, a, w)
    m_total, k_total = a.shape
    n_total = w.shape[1]
    blocks = range(0, m_total, p.rows)
    if precision is None:
        precisions = [min_precision(a[m0 : m0 + p.rows], p.a_signed) for m0 in blocks]
    elif is_int(precision):
        precisions = [precision] * len(blocks)
    else:
        precisions = list(precision)
        require(
            len(precisions) == len(blocks),
            "precision",
            precision,
            f"None, an int or a list of {len(blocks)} (one per block of {p.rows} rows)",
        )
    weights, activations, results, jobs = [], [], [], []
    chunks = ceil(k_total / p.simd)
    for m0, prec in zip(blocks, precisions):
        a_block = np.zeros((p.rows, chunks * p.simd), dtype=np.int64)
        a_block[: min(p.rows, m_total - m0), :k_total] = a[m0 : m0 + p.rows]
        check_operands(p, a_block[:, :k_total], w, prec)
        for n0 in range(0, n_total, p.lanes):
            w_block = np.zeros((chunks * p.simd, p.lanes), dtype=np.int64)
            w_block[:k_total, : min(p.lanes, n_total - n0)] = w[:, n0 : n0 + p.lanes]
            for chunk in range(chunks):
                k0 = chunk * p.simd
                weights.append(w_block[k0 : k0 + p.simd].T.reshape(-1).tolist())
                planes = bit_planes(a_block[:, k0 : k0 + p.simd], prec, p.a_signed, p.msb_first)
                masks = planes @ (1 << np.arange(p.simd, dtype=np.int64))  # element j at bit j
                for plane in masks:
                    activations.append({"bits": plane.tolist(), "precision": prec, "last": int(chunk == chunks - 1)})
            results.append((m0, n0))
            jobs.append((chunks, prec))
    return BitSerialPlan(weights, activations, results, jobs, (m_total, k_total, n_total))


def assemble_results(p: BitSerialParams, plan: BitSerialPlan, beats: list[list[int]]) -> np.ndarray:
    """Place result beats (rows x lanes sums each, row-major, in arrival order) into Y[M, N]."""
    m_total, _, n_total = plan.shape
    if len(beats) != len(plan.results):
        raise ValueError(f"got {len(beats)} result beats, the plan produces {len(plan.results)}")
    y = np.zeros((m_total, n_total), dtype=np.int64)
    for (m0, n0), beat in zip(plan.results, beats):
        block = np.asarray(beat, dtype=np.int64).reshape(p.rows, p.lanes)
        height, width = min(p.rows, m_total - m0), min(p.lanes, n_total - n0)
        y[m0 : m0 + height, n0 : n0 + width] = block[:height, :width]
    return y


# --------------------------------------------------------------------------------------------------
# Cycle model


def dot_cycles(p: BitSerialParams, k: int, precision: int) -> int:
    """Cycles of one K-element dot product (all rows x lanes PEs at once) from its first bit-plane handshake to
    its result handshake, full rate: one bit-plane per cycle for each of the ceil(K / simd) chunks."""
    return ceil(k / p.simd) * precision + p.latency_cycles


def jobs_cycles(p: BitSerialParams, jobs: list[tuple[int, int]]) -> int:
    """Cycles from the first input handshake to the last result handshake for back-to-back dot products
    (chunks, precision), with always-valid sources and an always-ready sink: the array never stalls."""
    return sum(chunks * precision for chunks, precision in jobs) + p.latency_cycles


def gemm_cycles(p: BitSerialParams, m: int, k: int, n: int, precision: int | None = None) -> int:
    """Cycles of an M x K x N GEMM planned by `plan_gemm` at one precision for all jobs (default a_max)."""
    jobs = ceil(m / p.rows) * ceil(n / p.lanes)
    return jobs_cycles(p, [(ceil(k / p.simd), precision or p.a_max)] * jobs)


# --------------------------------------------------------------------------------------------------
# Component


def _shape(width: int, is_signed: bool) -> Shape:
    return signed(width) if is_signed else unsigned(width)


def weight_layout(p: BitSerialParams) -> data.ArrayLayout:
    return data.ArrayLayout(data.ArrayLayout(_shape(p.w_width, p.w_signed), p.simd), p.lanes)


def activation_layout(p: BitSerialParams) -> data.StructLayout:
    return data.StructLayout(
        {"bits": data.ArrayLayout(unsigned(p.simd), p.rows), "precision": unsigned(p.precision_width), "last": 1}
    )


def result_layout(p: BitSerialParams) -> data.ArrayLayout:
    return data.ArrayLayout(data.ArrayLayout(_shape(p.acc_bits, p.acc_signed), p.lanes), p.rows)


class BitSerialArray(wiring.Component):
    """rows x lanes bit-serial PEs with their plane sequencer and result FIFO.

    Ports (valid/ready streams): ``weights`` (lanes x simd weights, one beat per chunk), ``activations``
    (one bit-plane of rows x simd activations + precision + last per beat), ``results`` (rows x lanes sums,
    one beat per dot product). See the module docstring for the protocol.
    """

    def __init__(self, p: BitSerialParams):
        self.p = p
        super().__init__(
            {
                "weights": In(stream.Signature(weight_layout(p))),
                "activations": In(stream.Signature(activation_layout(p))),
                "results": Out(stream.Signature(result_layout(p))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.p
        acc_shape = _shape(p.acc_bits, p.acc_signed)
        act, wts = self.activations, self.weights

        m.submodules.result_fifo = result_fifo = fifo.SyncFIFOBuffered(
            width=Shape.cast(result_layout(p)).width, depth=p.fifo_depth
        )
        m.d.comb += [
            self.results.valid.eq(result_fifo.r_rdy),
            self.results.payload.eq(result_fifo.r_data),
            result_fifo.r_en.eq(self.results.ready),
        ]

        # -- plane sequencer: which bit of which chunk the accepted plane is -------------------------
        # index of the plane within its chunk (one bit even for a_max = 1: no zero-width wires)
        plane = Signal(range(max(p.a_max, 2)), name="plane")
        chunk_first = Signal(init=1, name="chunk_first")  # this chunk starts a dot product
        plane_last = Signal()
        m.d.comb += plane_last.eq(plane + 1 >= act.payload.precision)
        final = Signal()
        m.d.comb += final.eq(plane_last & act.payload.last)

        # Credits: results promised to accepted final planes but not yet handed out. Registered, computed a
        # cycle early assuming that cycle reserves one too, so the handshake does not wait on an adder.
        reserved = Signal(range(p.fifo_depth + 1))
        room = Signal(init=1)
        reserve, release = Signal(), Signal()
        m.d.comb += release.eq(self.results.valid & self.results.ready)
        m.d.sync += [reserved.eq(reserved + reserve - release), room.eq(reserved + 2 <= p.fifo_depth)]

        both = act.valid & wts.valid
        accept = Signal()
        m.d.comb += [
            accept.eq(both & (~final | room)),
            act.ready.eq(accept),
            wts.ready.eq(accept & plane_last),
            reserve.eq(accept & final),
        ]
        with m.If(accept):
            m.d.sync += [
                plane.eq(Mux(plane_last, 0, plane + 1)),
                chunk_first.eq(Mux(plane_last, act.payload.last, chunk_first)),
            ]

        # the sign plane (a two's-complement activation's MSB) comes first MSB-first, last LSB-first
        sign_plane = (plane == 0) if p.msb_first else plane_last
        is_sign = Signal()
        m.d.comb += is_sign.eq(sign_plane if p.a_signed else 0)

        # -- stage 1: input register (bit-planes, the chunk's weights, control) ---------------------
        ctrl = data.StructLayout(
            {"valid": 1, "first": 1, "sign": 1, "plane_last": 1, "chunk_first": 1, "final": 1, "shift": plane.shape()}
        )
        ctrl1 = Signal(ctrl, name="ctrl1")
        m.d.sync += [
            ctrl1.valid.eq(accept),
            ctrl1.first.eq(plane == 0),
            ctrl1.sign.eq(is_sign),
            ctrl1.plane_last.eq(plane_last),
            ctrl1.chunk_first.eq(chunk_first),
            ctrl1.final.eq(final),
        ]
        if not p.msb_first:
            m.d.sync += ctrl1.shift.eq(plane)  # LSB-first: plane i is bit i
        bits1 = Signal(data.ArrayLayout(unsigned(p.simd), p.rows), name="bits1", reset_less=True)
        w1 = Signal(weight_layout(p), name="w1", reset_less=True)
        with m.If(accept):
            m.d.sync += [bits1.eq(act.payload.bits), w1.eq(wts.payload)]

        # -- stage 2: partial products (AND gates + adder tree per PE) -------------------------------
        pp_shape = signed(p.pp_width)
        ctrl2 = Signal(ctrl, name="ctrl2")
        m.d.sync += ctrl2.eq(ctrl1)
        pp2 = [
            [Signal(pp_shape, name=f"pe_{r}_{c}_pp", reset_less=True) for c in range(p.lanes)] for r in range(p.rows)
        ]
        for r in range(p.rows):
            for c in range(p.lanes):
                terms = [Mux(bits1[r][j], w1[c][j], 0) for j in range(p.simd)]
                m.d.sync += pp2[r][c].eq(_adder_tree(terms))

        # -- stage 3: chunk partial P (Horner or shifted add; the sign plane subtracts) --------------
        partial_shape = signed(p.partial_width)
        ctrl3 = Signal(ctrl, name="ctrl3")
        m.d.sync += ctrl3.eq(ctrl2)
        partials = [
            [Signal(partial_shape, name=f"pe_{r}_{c}_partial", reset_less=True) for c in range(p.lanes)]
            for r in range(p.rows)
        ]
        for r in range(p.rows):
            for c in range(p.lanes):
                pp = pp2[r][c]
                base = Mux(ctrl2.first, 0, partials[r][c])
                if p.msb_first:
                    stepped = base * 2
                    term = Mux(ctrl2.sign, -pp, pp)
                else:
                    stepped = base
                    term = Mux(ctrl2.sign, -pp, pp) << ctrl2.shift
                with m.If(ctrl2.valid):
                    m.d.sync += partials[r][c].eq(stepped + term)

        # -- stage 4: accumulate chunks; a dot product's sum goes into the result FIFO ----------------
        accs = [
            [Signal(acc_shape, name=f"pe_{r}_{c}_acc", reset_less=True) for c in range(p.lanes)] for r in range(p.rows)
        ]
        totals = Signal(result_layout(p), name="totals")
        chunk_done = ctrl3.valid & ctrl3.plane_last
        for r in range(p.rows):
            for c in range(p.lanes):
                m.d.comb += totals[r][c].eq(Mux(ctrl3.chunk_first, 0, accs[r][c]) + partials[r][c])
                with m.If(chunk_done):
                    m.d.sync += accs[r][c].eq(totals[r][c])
        m.d.comb += [result_fifo.w_en.eq(chunk_done & ctrl3.final), result_fifo.w_data.eq(totals.as_value())]
        return m


def _adder_tree(terms):
    """Sum of `terms` as a balanced tree (log depth rather than a chain)."""
    terms = list(terms) or [Const(0)]
    while len(terms) > 1:
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = pairs + ([terms[-1]] if len(terms) % 2 else [])
    return terms[0]


register(
    Block(
        name="bitserial",
        summary="Stripes-style bit-serial MAC array (rows x lanes PEs, run-time activation precision 1..a_max)",
        params=BitSerialParams,
        component=BitSerialArray,
        golden=bitserial_golden,
        cycles=gemm_cycles,
        testbench="hardwire.sim.tb_bitserial",
        generator_version=GENERATOR_VERSION,
    )
)
