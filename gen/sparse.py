"""N:M sparse DSP chains (FlightLLM-style): dense and N:M-sparse weights on the same multipliers, the sparsity
pattern chosen per beat at run time.

Top to bottom: the parameters, the weight-compression tool (magnitude N:M pruning, encoding into values and
in-block indices, decoding), the golden model, the beat plan (driver), the cycle model, the component.

Sparsity: in every block of M consecutive input-dimension weights of a row, N are kept (those of largest
|w|; among equal magnitudes the lower in-block index wins, so pruning is deterministic). A pruned row of K
weights is stored as K*N/M values and as many in-block indices of log2(M) bits (kept positions of a block
in increasing index order). ``dense`` is the pattern 1:1: every weight kept, no index used.

The chain: L multiply-add stages whose partial sum cascades stage to stage, one register per stage (a DSP48
PCIN/PCOUT adder chain: stage s computes P_s = P_{s-1} + a_s * w_s). The chain consumes L non-zero weights
per beat, so a row of nnz = K*N/M non-zeros takes ceil(nnz / L) beats whatever the pattern: sparse rows
finish M/N times sooner with every multiplier busy. Per beat the input stream brings, besides the L
(value, index) pairs of each chain, the L*M/N activations those pairs draw from: the L/N consecutive blocks
of M activations the beat covers (dense: L activations). The bus has ``act_lanes`` = L * max(M/N) lanes;
a pattern with a smaller M/N leaves the upper lanes unused. Stage s of an N:M beat works on block s // N of
the beat, lanes (s // N) * M .. + M - 1, and its selector (a multiplexer over the union of its windows over
the pattern set) picks lane (s // N) * M + index. When nnz is not a multiple of L, the row's last beat is
partly empty (zero weights; its blocks beyond the row are zero activations): the row costs ceil(nnz / L)
beats and the utilization of that row is nnz / (L * ceil(nnz / L)); rows never share a beat, because
each row ends in its own accumulator result.

Cascade timing: the selected activation and the weight are registered, then delayed s more cycles for stage
s (the skew that makes stage s see its operands exactly when the partial sum of the same beat arrives from
stage s-1), multiplied into a product register (DSP48 MREG) and added to the incoming partial sum into the
stage's output register (PREG; the incoming sum is the previous stage's PREG, which yosys' synth_xilinx
turns into a PCOUT -> PCIN cascade). The chain's sum of a beat leaves stage L-1 and is added into the
row's accumulator (fabric), which goes into the result FIFO on the row's last beat.

Several chains (``chains``, one output neuron each) run in lockstep on one shared activation stream: a
GEMV/GEMM of R rows runs the rows in groups of ``chains``, each group once per activation vector.

INT4 packing (``int4_packing``): two chains (neurons 2g and 2g+1) share one multiplier per stage. Their
INT4 weights are packed into one operand w_lo + w_hi * 2^G and multiplied by the activation, so the stage
computes a*w_lo + a*w_hi*2^G; the cascade sums L such packed products. The guard G is the width of the
signed range of L INT4 x INT8 products, so the low field never reaches the high one and the two chain sums
are recovered exactly: lo = P[0:G] (signed), hi = (P >> G) + P[G-1] (the sign borrow of lo put back).
Both neurons of a pair must then use the same activation at every stage: the pair shares one sparsity
mask (pruning by the pair's summed magnitude). The arithmetic is exact; the shared mask is what can cost
accuracy (none for dense). The DSP48E1s halve (the packed operand, 5 + G bits, fits the 25-bit A port); on
ECP5 it does not fit the 18x18 multiplier and yosys splits each one in two, so packing saves nothing there.

Stalls: none. The pipeline runs freely with a valid bit beside the data; a row's last beat is accepted only
while the result FIFO has an entry reserved for it (credits), and the FIFO is deep enough that an
always-ready sink never withholds one, so the cycle model is exact under any pattern of input bubbles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import ceil, log2

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from hardwire.gen.dsp import dsp48e1_mac, mult18x18d, sim_models
from hardwire.gen.registry import Block, register

from hardwire.params import bits_for_range, int_range, is_int, product_range, require, wrap

GENERATOR_VERSION = "1"

A_WIDTH = 8  # INT8 activations
W_WIDTHS = (4, 8)  # INT4 or INT8 weights
M_MAX_CHOICES = (2, 4, 8, 16)
DEFAULT_PATTERNS = "dense,1:2,2:4,1:4,2:8,4:8"
MAX_LANES = 64
MAX_CHAINS = 64
SPARSE_DSP_KINDS = ("inferred", "ecp5", "dsp48e1")

# Pipeline, from the cycle a beat is accepted (t): selected activation and weights registered (t + 1),
# product register (t + 2), then one cascade register per stage (stage L-1's sum in t + 2 + L - 1 + 1);
# the accumulator adds it and writes the result FIFO in cycle t + 2 + L.
SELECT_STAGES = 1
PRODUCT_STAGES = 1
# A SyncFIFOBuffered entry written at the end of cycle t is handed out (handshake) in cycle t + 2.
FIFO_LATENCY_CYCLES = 2


# --------------------------------------------------------------------------------------------------
# Parameters


def parse_pattern(name: str) -> tuple[int, int]:
    """'dense' -> (1, 1); 'N:M' -> (N, M). Raises ParameterError for anything else."""
    if name == "dense":
        return 1, 1
    parts = name.split(":")
    ok = len(parts) == 2 and all(part.isdigit() for part in parts)
    require(ok, "patterns", name, "'dense' or N:M with integers N < M, e.g. 2:4")
    n, m = int(parts[0]), int(parts[1])
    require(
        1 <= n < m and m in M_MAX_CHOICES,
        "patterns",
        name,
        f"N:M with 1 <= N < M and M one of {', '.join(map(str, M_MAX_CHOICES))}",
    )
    return n, m


@dataclass(frozen=True)
class SparseParams:
    """A validated sparse-chain engine. Raises ParameterError naming the bad parameter.

    ``patterns``: the run-time pattern set, comma separated (its order gives each pattern's id on the
    stream); ``m_max``: the largest block size, which sets the index width log2(m_max).
    """

    lanes: int = 4  # L: multiply-add stages per chain
    chains: int = 2  # output neurons side by side
    patterns: str = DEFAULT_PATTERNS
    m_max: int = 8
    w_width: int = 8
    k_max: int = 4096  # longest dot product (dense K): sets the accumulator width
    int4_packing: bool = False
    dsp: str = "inferred"  # gen.dsp kind: inferred, ecp5 (MULT18X18D), dsp48e1 (PCIN/PCOUT chain)

    def __post_init__(self):
        require(is_int(self.lanes) and 1 <= self.lanes <= MAX_LANES, "lanes", self.lanes, f"1..{MAX_LANES}")
        require(is_int(self.chains) and 1 <= self.chains <= MAX_CHAINS, "chains", self.chains, f"1..{MAX_CHAINS}")
        require(
            self.m_max in M_MAX_CHOICES and is_int(self.m_max),
            "m_max",
            self.m_max,
            " or ".join(map(str, M_MAX_CHOICES)),
        )
        require(self.w_width in W_WIDTHS and is_int(self.w_width), "w_width", self.w_width, "4 or 8")
        require(is_int(self.k_max) and 1 <= self.k_max <= 1 << 20, "k_max", self.k_max, "1..1048576")
        require(isinstance(self.int4_packing, bool), "int4_packing", self.int4_packing, "True or False")
        require(
            isinstance(self.patterns, str) and self.patterns.strip() != "",
            "patterns",
            self.patterns,
            "a comma-separated list such as " + DEFAULT_PATTERNS,
        )
        names = self.pattern_names
        require(len(set(names)) == len(names), "patterns", self.patterns, "each pattern once")
        for name in names:
            n, m = parse_pattern(name)
            require(m <= self.m_max, "patterns", name, f"M <= m_max={self.m_max}")
            require(self.lanes % n == 0, "patterns", name, f"N dividing lanes={self.lanes} (a beat holds whole blocks)")
        if self.int4_packing:
            require(self.w_width == 4, "int4_packing", self.int4_packing, "False unless w_width=4")
            require(self.chains % 2 == 0, "chains", self.chains, "an even number with int4_packing (pairs)")
        require(self.dsp in SPARSE_DSP_KINDS, "dsp", self.dsp, " or ".join(SPARSE_DSP_KINDS))
        if self.dsp == "ecp5":
            require(
                not self.int4_packing,
                "int4_packing",
                self.int4_packing,
                "False with dsp='ecp5' (the packed operand is wider than the 18x18 multiplier)",
            )
        if self.dsp == "dsp48e1":
            require(
                self.operand_width <= 25,
                "int4_packing",
                self.int4_packing,
                f"False for lanes={self.lanes} with dsp='dsp48e1' (the packed operand, {self.operand_width} "
                "bits, must fit the 25-bit multiplier input)",
            )

    @classmethod
    def from_dict(cls, values: dict) -> SparseParams:
        """The inverse of `to_dict` (derived entries are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    # -- derived -----------------------------------------------------------------------------------

    @property
    def pattern_names(self) -> list[str]:
        return [name.strip() for name in self.patterns.split(",")]

    def pattern_id(self, name: str) -> int:
        require(name in self.pattern_names, "pattern", name, "one of " + ", ".join(self.pattern_names))
        return self.pattern_names.index(name)

    @property
    def expansion(self) -> int:
        """Largest M/N of the set: activations per non-zero weight of a beat."""
        return max(m // n for n, m in map(parse_pattern, self.pattern_names))

    @property
    def act_lanes(self) -> int:
        return self.lanes * self.expansion

    @property
    def index_bits(self) -> int:
        return max(1, int(log2(self.m_max)))

    @property
    def pattern_bits(self) -> int:
        return max(1, (len(self.pattern_names) - 1).bit_length())

    @property
    def pack(self) -> int:
        """Chains per multiplier: 2 with int4_packing, else 1."""
        return 2 if self.int4_packing else 1

    @property
    def groups(self) -> int:
        """Multiplier chains (one index stream each): chains / pack."""
        return self.chains // self.pack

    @property
    def multipliers(self) -> int:
        return self.groups * self.lanes

    @property
    def product_range(self) -> tuple[int, int]:
        return product_range(int_range(A_WIDTH, True), int_range(self.w_width, True))

    @property
    def beat_sum_width(self) -> int:
        """Signed width of the sum of one beat's L products; with packing also the guard G."""
        lo, hi = self.product_range
        return bits_for_range(self.lanes * lo, self.lanes * hi, True)

    @property
    def guard_bits(self) -> int:
        """G: the high neuron's field starts at bit G of the packed operand and of the chain's sum."""
        return self.beat_sum_width

    @property
    def operand_width(self) -> int:
        """Signed width of a stage's weight operand: w, or w_lo + w_hi * 2^G when packed."""
        lo, hi = int_range(self.w_width, True)
        if self.int4_packing:
            lo, hi = lo * ((1 << self.guard_bits) + 1), hi * ((1 << self.guard_bits) + 1)
        return bits_for_range(lo, hi, True)

    @property
    def packed_product_width(self) -> int:
        """Signed width of a stage's product (both fields when packed)."""
        lo, hi = self.product_range
        if self.int4_packing:
            lo, hi = lo * ((1 << self.guard_bits) + 1), hi * ((1 << self.guard_bits) + 1)
        return bits_for_range(lo, hi, True)

    @property
    def chain_width(self) -> int:
        """Width of the cascade's partial sums (packed: both fields)."""
        if not self.int4_packing:
            return self.beat_sum_width
        lo, hi = self.product_range
        shift = 1 << self.guard_bits
        return bits_for_range(self.lanes * lo * (shift + 1), self.lanes * hi * (shift + 1), True)

    @property
    def acc_width(self) -> int:
        """Exact: a k_max-deep dot product of extreme operands cannot overflow it, one bit less could."""
        lo, hi = self.product_range
        return bits_for_range(self.k_max * lo, self.k_max * hi, True)

    @property
    def product_latency(self) -> int:
        """Registers from a stage's operands to the adder: the select register and the product register, plus
        MULT18X18D's output register with dsp='ecp5' (the DSP48E1 has the same two as the inferred chain)."""
        return SELECT_STAGES + PRODUCT_STAGES + (1 if self.dsp == "ecp5" else 0)

    @property
    def latency_cycles(self) -> int:
        """Cycles from the input handshake of a row's last beat to its result handshake (ready sink)."""
        return self.product_latency + self.lanes + FIFO_LATENCY_CYCLES

    @property
    def fifo_depth(self) -> int:
        """Result entries: a row may end every cycle, so up to latency results are in flight; + 2 since the
        registered credit check looks one cycle ahead and a full FIFO must still take the one in flight."""
        return self.latency_cycles + 2

    @property
    def top_name(self) -> str:
        tags = "_".join(name.replace(":", "o") for name in self.pattern_names)
        name = f"sparse_l{self.lanes}_c{self.chains}_w{self.w_width}_m{self.m_max}_{tags}"
        if self.int4_packing:
            name += "_packed"
        if self.dsp != "inferred":
            name += f"_{self.dsp}"
        if self.k_max != SparseParams.__dataclass_fields__["k_max"].default:
            name += f"_k{self.k_max}"
        return name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {
            "acc_width": self.acc_width,
            "act_lanes": self.act_lanes,
            "multipliers": self.multipliers,
            "latency_cycles": self.latency_cycles,
            "name": self.top_name,
        }


# --------------------------------------------------------------------------------------------------
# Compression tool: magnitude N:M pruning, encoding, decoding


def nm_mask(weights, pattern: str, row_group: int = 1) -> np.ndarray:
    """Boolean (R, K) mask of the weights magnitude N:M pruning keeps.

    Per block of M consecutive columns of a row, the N positions of largest |w| are kept; equal magnitudes
    keep the lower in-block index (a stable descending sort). With row_group=g, g consecutive rows share
    one mask chosen by their summed |w| (what int4_packing needs). A K not a multiple of M is padded with
    zeros (never preferred over a real weight of equal magnitude, which has a lower index). Works on
    PyTorch tensors (torch.sort is the ranking) and on anything np.asarray takes."""
    k = np.shape(weights)[1] if len(np.shape(weights)) == 2 else None
    return _padded_mask(weights, pattern, row_group)[:, :k]


def _padded_mask(weights, pattern: str, row_group: int) -> np.ndarray:
    """`nm_mask` over K padded to whole blocks: exactly N kept positions in every block."""
    import torch

    n, m = parse_pattern(pattern)
    if isinstance(weights, torch.Tensor):
        w = weights.detach().to(torch.float64)
    else:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    require(w.ndim == 2, "weights shape", tuple(w.shape), "(R, K)")
    rows, k = w.shape
    require(
        is_int(row_group) and row_group >= 1 and rows % row_group == 0,
        "row_group",
        row_group,
        f"a divisor of the row count {rows}",
    )
    blocks = ceil(k / m)
    if m == 1:
        return np.ones((rows, k), dtype=bool)
    score = torch.zeros(rows, blocks * m, dtype=torch.float64)
    score[:, :k] = w.abs()
    score = score.reshape(rows // row_group, row_group, blocks, m).sum(dim=1)
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices[..., :n]
    keep = torch.zeros_like(score, dtype=torch.bool).scatter_(-1, order, True)
    return keep.repeat_interleave(row_group, dim=0).reshape(rows, blocks * m).numpy()


def prune_nm(weights, pattern: str, row_group: int = 1):
    """The weights with everything outside `nm_mask` set to zero (same type: NumPy array or tensor)."""
    import torch

    mask = nm_mask(weights, pattern, row_group)
    if isinstance(weights, torch.Tensor):
        return weights * torch.as_tensor(mask, dtype=weights.dtype)
    w = np.asarray(weights)
    return np.where(mask, w, np.zeros_like(w))


@dataclass(frozen=True)
class Compressed:
    """An N:M-sparse (R, K) weight matrix as values and in-block indices, (R, ceil(K/M) * N) each.

    Non-zero j of a row lies in block j // N at in-block position indices[r, j]: column (j // N) * M +
    indices[r, j]. Dense (N = M = 1): values are the weights, indices are zero."""

    pattern: str
    k: int
    values: np.ndarray
    indices: np.ndarray
    row_group: int = 1

    @property
    def n(self) -> int:
        return parse_pattern(self.pattern)[0]

    @property
    def m(self) -> int:
        return parse_pattern(self.pattern)[1]

    @property
    def rows(self) -> int:
        return self.values.shape[0]

    @property
    def nnz_per_row(self) -> int:
        return self.values.shape[1]

    def columns(self) -> np.ndarray:
        """(R, nnz) column of every stored value in the (padded) row."""
        block = np.arange(self.nnz_per_row) // self.n
        return block[None, :] * self.m + self.indices


def compress(weights, pattern: str, row_group: int = 1) -> Compressed:
    """Encode N:M-sparse integer weights (R, K). Raises ParameterError if some block (of a row group)
    holds more than N non-zeros: prune first (`prune_nm`). Every block gets exactly N entries: its
    non-zeros and, if fewer, zeros at the lowest free positions, in increasing index order."""
    w = np.asarray(weights)
    require(w.ndim == 2, "weights shape", w.shape, "(R, K)")
    require(
        w.size == 0 or np.issubdtype(w.dtype, np.integer) or np.array_equal(w, np.round(w)),
        "weights values",
        w.dtype,
        "integers",
    )
    w = w.astype(np.int64)
    n, m = parse_pattern(pattern)
    rows, k = w.shape
    keep = _padded_mask(w, pattern, row_group)
    outside = np.argwhere((w != 0) & ~keep[:, :k])
    if outside.size:
        r, col = (int(v) for v in outside[0])
        shared = f" (one mask shared by {row_group} rows)" if row_group > 1 else ""
        require(
            False,
            "weights",
            f"row {r} block {col // m}",
            f"at most N={n} non-zeros per block of M={m}{shared}: prune first",
        )
    blocks = ceil(k / m)
    padded = np.zeros((rows, blocks * m), dtype=np.int64)
    padded[:, :k] = w
    positions = np.nonzero(keep.reshape(rows, blocks, m))[2].reshape(rows, blocks * n)
    columns = (np.arange(blocks * n) // n)[None, :] * m + positions
    values = np.take_along_axis(padded, columns, axis=1)
    indices = positions if m > 1 else np.zeros_like(positions)
    return Compressed(pattern, k, values, indices.astype(np.int64), row_group)


def decompress(c: Compressed) -> np.ndarray:
    """The dense (R, K) matrix back from its encoding."""
    blocks = ceil(c.k / c.m)
    dense = np.zeros((c.rows, blocks * c.m), dtype=np.int64)
    np.put_along_axis(dense, c.columns(), c.values, axis=1)
    return dense[:, : c.k]


# --------------------------------------------------------------------------------------------------
# Golden model


def check_operands(p: SparseParams, c: Compressed, x) -> np.ndarray:
    """Validate a compressed matrix and (V, K) activations against the engine; return x as int64."""
    require(c.pattern in p.pattern_names, "pattern", c.pattern, "one of " + ", ".join(p.pattern_names))
    require(c.k <= p.k_max, "K", c.k, f"1..k_max={p.k_max}")
    w_lo, w_hi = int_range(p.w_width, True)
    if c.values.size and (c.values.min() < w_lo or c.values.max() > w_hi):
        require(False, "weights values", (int(c.values.min()), int(c.values.max())), f"{w_lo}..{w_hi}")
    require(np.all((c.indices >= 0) & (c.indices < c.m)), "indices", "out of range", f"0..{c.m - 1}")
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    require(x.ndim == 2 and x.shape[1] == c.k, "x shape", x.shape, f"(V, K={c.k})")
    a_lo, a_hi = int_range(A_WIDTH, True)
    require(
        x.size == 0 or (x.min() >= a_lo and x.max() <= a_hi),
        "x values",
        (int(x.min()), int(x.max())) if x.size else (),
        f"{a_lo}..{a_hi}",
    )
    return x.astype(np.int64)


def sparse_golden(p: SparseParams, c: Compressed, x) -> np.ndarray:
    """(V, K) activations -> (V, R): what the engine computes, straight from the encoding. Each stored value
    multiplies the activation its index selects (a gather, not a dense product), summed in acc_width bits."""
    x = check_operands(p, c, x)
    blocks = ceil(c.k / c.m)
    x_padded = np.zeros((x.shape[0], blocks * c.m), dtype=np.int64)
    x_padded[:, : c.k] = x
    gathered = x_padded[:, c.columns()]  # (V, R, nnz)
    return wrap((gathered * c.values[None]).sum(axis=2), p.acc_width, True)


def packed_beat_sums(p: SparseParams, lo_products: np.ndarray, hi_products: np.ndarray) -> tuple:
    """The packed arithmetic of one beat, in integers: the cascade's sum P of L packed products and the two
    chain sums recovered from it (lo = P[0:G] signed, hi = (P >> G) + P[G-1]). Arrays (..., L)."""
    g = p.guard_bits
    total = lo_products.sum(axis=-1) + (hi_products.sum(axis=-1) << g)
    lo = wrap(total, g, True)
    hi = (total >> g) + ((total >> (g - 1)) & 1)
    return total, lo, hi


# --------------------------------------------------------------------------------------------------
# Driver: a GEMV/GEMM as beats on the input stream


def beat_fields(p: SparseParams) -> dict[str, int]:
    """Field widths of an input beat, LSB first (the Amaranth layout of `inp.payload`)."""
    return {
        "act": p.act_lanes * A_WIDTH,
        "w": p.chains * p.lanes * p.w_width,
        "idx": p.groups * p.lanes * p.index_bits,
        "pattern": p.pattern_bits,
        "last": 1,
    }


def row_beats(p: SparseParams, k: int, pattern: str) -> int:
    """Beats of one K-deep row: ceil(nnz / L), nnz = ceil(K / M) * N non-zeros."""
    n, m = parse_pattern(pattern)
    return ceil(ceil(k / m) * n / p.lanes)


@dataclass
class SparsePlan:
    """Beats to send (dicts of lane lists, see `beat_fields`) and where each result beat belongs."""

    beats: list[dict]
    results: list[tuple[int, int]]  # per result beat: (vector v, first row r0 of its `chains` lanes)
    shape: tuple[int, int, int]  # (V, K, R)
    pattern: str


def plan(p: SparseParams, c: Compressed, x) -> SparsePlan:
    """Y[V, R] = x[V, K] @ W[R, K]^T: rows in groups of `chains`, each group once per vector, ceil(nnz / L)
    beats per (group, vector). Missing rows of the last group and missing slots of a row's last beat are
    zero weights (index 0); activation lanes beyond the row are zero."""
    x = check_operands(p, c, x)
    if p.int4_packing and c.rows:
        pairs = c.indices[: c.rows - c.rows % 2].reshape(-1, 2, c.nnz_per_row)
        require(
            c.row_group % 2 == 0 or np.array_equal(pairs[:, 0], pairs[:, 1]),
            "indices",
            "differ within a row pair",
            "one shared mask per row pair with int4_packing (row_group=2)",
        )
    n, m = c.n, c.m
    lanes, chains = p.lanes, p.chains
    beats_per_row = row_beats(p, c.k, c.pattern)
    nnz_slots = beats_per_row * lanes
    act_per_beat = lanes // n * m
    row_groups = ceil(c.rows / chains)
    values = np.zeros((row_groups * chains, nnz_slots), dtype=np.int64)
    indices = np.zeros_like(values)
    values[: c.rows, : c.nnz_per_row] = c.values
    indices[: c.rows, : c.nnz_per_row] = c.indices
    x_padded = np.zeros((x.shape[0], beats_per_row * act_per_beat), dtype=np.int64)
    x_padded[:, : c.k] = x
    pattern_id = p.pattern_id(c.pattern)
    beats, results = [], []
    for group in range(row_groups):
        rows = slice(group * chains, (group + 1) * chains)
        for v in range(x.shape[0]):
            for b in range(beats_per_row):
                slots = slice(b * lanes, (b + 1) * lanes)
                act = np.zeros(p.act_lanes, dtype=np.int64)
                act[:act_per_beat] = x_padded[v, b * act_per_beat : (b + 1) * act_per_beat]
                idx_rows = indices[rows][:: p.pack, slots]
                beats.append(
                    {
                        "act": act.tolist(),
                        "w": values[rows, slots].reshape(-1).tolist(),
                        "idx": idx_rows.reshape(-1).tolist(),
                        "pattern": pattern_id,
                        "last": int(b == beats_per_row - 1),
                    }
                )
            results.append((v, group * chains))
    return SparsePlan(beats, results, (x.shape[0], c.k, c.rows), c.pattern)


def assemble(p: SparseParams, sparse_plan: SparsePlan, result_beats: list[list[int]]) -> np.ndarray:
    """Place result beats (`chains` lanes each, in arrival order) into Y[V, R]."""
    v_total, _, r_total = sparse_plan.shape
    if len(result_beats) != len(sparse_plan.results):
        raise ValueError(f"got {len(result_beats)} result beats, the plan produces {len(sparse_plan.results)}")
    y = np.zeros((v_total, r_total), dtype=np.int64)
    for (v, r0), lanes in zip(sparse_plan.results, result_beats):
        width = min(p.chains, r_total - r0)
        y[v, r0 : r0 + width] = lanes[:width]
    return y


# --------------------------------------------------------------------------------------------------
# Cycle model


def sparse_schedule(p: SparseParams, offered: list[int], lasts: list[int]) -> tuple[list[int], list[int]]:
    """Exact handshake cycles (accepted input beats, produced result beats) with an always-ready sink: beat
    i is taken at max(offered[i], accepted[i-1] + 1); a row's result comes latency_cycles after its last
    beat. Credits never run out then (fifo_depth covers the latency), so nothing else waits."""
    accepted, produced = [], []
    for offer, last in zip(offered, lasts):
        cycle = int(offer) if not accepted else max(int(offer), accepted[-1] + 1)
        accepted.append(cycle)
        if last:
            produced.append(cycle + p.latency_cycles)
    return accepted, produced


def sparse_cycles(p: SparseParams, k: int, pattern: str = "dense", rows: int = 1, vectors: int = 1) -> dict:
    """Full-rate totals of Y[V, R] = x @ W^T for K-deep rows: beats, cycles from the first input handshake
    to the last result handshake (both counted), multiplies issued and the multiplier utilization."""
    n, m = parse_pattern(pattern)
    per_row = row_beats(p, k, pattern)
    beats = ceil(rows / p.chains) * vectors * per_row
    nnz = ceil(k / m) * n
    useful = rows * vectors * nnz
    return {
        "beats": beats,
        "total_cycles": beats + p.latency_cycles,
        "latency_cycles": p.latency_cycles,
        "multiplies": useful,
        "dense_macs": rows * vectors * k,
        "utilization": useful / (beats * p.lanes * p.chains) if beats else 0.0,
    }


# --------------------------------------------------------------------------------------------------
# Component


class SparseEngine(wiring.Component):
    """`chains` sparse DSP chains of `lanes` stages on one activation stream.

    Ports: ``inp`` (per beat: act_lanes activations, chains * lanes weights, groups * lanes indices, the
    pattern id, `last` on a row's final beat), ``out`` (one beat per row group and vector: `chains` sums).
    """

    def __init__(self, p: SparseParams):
        self.p = p
        beat = data.StructLayout(
            {
                "act": data.ArrayLayout(signed(A_WIDTH), p.act_lanes),
                "w": data.ArrayLayout(signed(p.w_width), p.chains * p.lanes),
                "idx": data.ArrayLayout(unsigned(p.index_bits), p.groups * p.lanes),
                "pattern": unsigned(p.pattern_bits),
                "last": 1,
            }
        )
        super().__init__(
            {
                "inp": In(stream.Signature(beat)),
                "out": Out(stream.Signature(data.ArrayLayout(signed(p.acc_width), p.chains))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.p
        beat = self.inp.payload

        m.submodules.result_fifo = result_fifo = fifo.SyncFIFOBuffered(width=p.chains * p.acc_width, depth=p.fifo_depth)
        m.d.comb += [
            self.out.valid.eq(result_fifo.r_rdy),
            self.out.payload.eq(result_fifo.r_data),
            result_fifo.r_en.eq(self.out.ready),
        ]

        # Credits (as in gen/mvu.py): results promised to accepted last beats but not yet handed out.
        reserved = Signal(range(p.fifo_depth + 1))
        room = Signal(init=1)
        reserve = Signal()
        release = Signal()
        m.d.comb += [self.inp.ready.eq(~beat.last | room), release.eq(self.out.valid & self.out.ready)]
        accept = Signal()
        m.d.comb += [accept.eq(self.inp.valid & self.inp.ready), reserve.eq(accept & beat.last)]
        m.d.sync += [reserved.eq(reserved + reserve - release), room.eq(reserved + 2 <= p.fifo_depth)]

        first = Signal(init=1)  # the next accepted beat starts a row
        with m.If(accept):
            m.d.sync += first.eq(beat.last)
        meta = data.StructLayout({"valid": 1, "first": 1, "last": 1})
        meta_in = Signal(meta)
        m.d.comb += [meta_in.valid.eq(accept), meta_in.first.eq(first), meta_in.last.eq(beat.last)]
        meta_acc = _delay(m, meta_in, p.product_latency + p.lanes, "meta")

        chain_sums = []
        for group in range(p.groups):
            chain_sums.extend(self._chain(m, group))

        results = []
        for c in range(p.chains):
            acc = Signal(signed(p.acc_width), name=f"acc{c}", reset_less=True)
            total = Signal(signed(p.acc_width), name=f"acc{c}_next")
            m.d.comb += total.eq(Mux(meta_acc.first, 0, acc) + chain_sums[c])
            with m.If(meta_acc.valid):
                m.d.sync += acc.eq(total)
            results.append(total)
        m.d.comb += [result_fifo.w_en.eq(meta_acc.valid & meta_acc.last), result_fifo.w_data.eq(Cat(*results))]
        return m

    def _selector(self, m, group: int, stage: int):
        """The activation stage `stage` of index stream `group` multiplies: per pattern N:M, lane
        (stage // N) * M + index of the beat's activations; dense: lane `stage`."""
        p = self.p
        beat = self.inp.payload
        index = beat.idx[group * p.lanes + stage]
        selected = Signal(signed(A_WIDTH), name=f"g{group}_s{stage}_select")
        with m.Switch(beat.pattern):
            for pattern_id, name in enumerate(p.pattern_names):
                n, block = parse_pattern(name)
                with m.Case(pattern_id):
                    if block == 1:
                        m.d.comb += selected.eq(beat.act[stage])
                    else:
                        base = stage // n * block
                        window = Array(beat.act[base + i] for i in range(block))
                        m.d.comb += selected.eq(window[index[: int(log2(block))]])
            with m.Default():
                m.d.comb += selected.eq(0)
        return selected

    def _chain(self, m, group: int) -> list:
        """One multiplier chain: per stage selector, operand registers skewed by the stage number, product
        register and cascade register. Returns the chain sums of its `pack` neurons (beat-aligned)."""
        p = self.p
        beat = self.inp.payload
        psum = None
        pcout = None
        for stage in range(p.lanes):
            tag = f"g{group}_s{stage}"
            weights = [beat.w[(group * p.pack + j) * p.lanes + stage] for j in range(p.pack)]
            if p.int4_packing:
                operand = weights[0] + (weights[1] << p.guard_bits)
            else:
                operand = weights[0]
            if p.dsp != "inferred":
                # The skew registers stay in fabric; the DSP's own input registers are the select registers
                # (they come after the skew here, which changes no timing), its M register (pipeline register
                # on ECP5) the product register, its P register (DSP48E1) the cascade register.
                w_skewed = _delay(m, operand, stage, f"{tag}_w_skew", data_path=True)
                a_skewed = _delay(m, self._selector(m, group, stage), stage, f"{tag}_a_skew", data_path=True)
                out = Signal(signed(p.chain_width), name=f"{tag}_psum", reset_less=True)
                if p.dsp == "ecp5":
                    product = mult18x18d(
                        m,
                        tag,
                        a_skewed,
                        w_skewed,
                        a_signed=True,
                        b_signed=True,
                        ce_b=Const(1, 1),
                        width=p.packed_product_width,
                    )
                    m.d.sync += out.eq(product if psum is None else psum + product)
                else:
                    p48, pcout = dsp48e1_mac(m, tag, w_skewed, a_skewed, ce_b=Const(1, 1), pcin=pcout)
                    m.d.comb += out.eq(p48)
                psum = out
                continue
            w_reg = Signal(signed(p.operand_width), name=f"{tag}_w", reset_less=True)
            a_reg = Signal(signed(A_WIDTH), name=f"{tag}_a", reset_less=True)
            m.d.sync += [w_reg.eq(operand), a_reg.eq(self._selector(m, group, stage))]
            w_op = _delay(m, w_reg, stage, f"{tag}_w_skew", data_path=True)
            a_op = _delay(m, a_reg, stage, f"{tag}_a_skew", data_path=True)
            product = Signal(signed(p.packed_product_width), name=f"{tag}_product", reset_less=True)
            m.d.sync += product.eq(a_op * w_op)
            out = Signal(signed(p.chain_width), name=f"{tag}_psum", reset_less=True)
            m.d.sync += out.eq(product if psum is None else psum + product)
            psum = out
        if not p.int4_packing:
            return [psum]
        g = p.guard_bits
        lo = Signal(signed(g), name=f"g{group}_lo")
        hi = Signal(signed(p.chain_width - g + 1), name=f"g{group}_hi")
        # P = hi * 2^G + lo with lo in G signed bits: P >> G is hi minus the borrow lo's sign took from it
        m.d.comb += [lo.eq(psum[:g].as_signed()), hi.eq((psum >> g) + psum[g - 1])]
        return [lo, hi]


def _delay(m, value, cycles: int, name: str, *, data_path: bool = False):
    """`value` delayed by `cycles` registers; data-path registers have no reset (a valid bit says when
    they matter), so they can become shift-register LUTs or DSP input registers."""
    for i in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_d{i}", reset_less=data_path)
        m.d.sync += reg.eq(value)
        value = reg
    return value


register(
    Block(
        name="sparse",
        summary="N:M sparse DSP chains (FlightLLM-style): dense and N:M patterns chosen at run time, GEMV/GEMM",
        params=SparseParams,
        component=SparseEngine,
        golden=sparse_golden,
        cycles=sparse_cycles,
        testbench="hardwire.sim.tb_sparse",
        generator_version=GENERATOR_VERSION,
        sim_models=lambda p: sim_models(p.dsp),
    )
)
