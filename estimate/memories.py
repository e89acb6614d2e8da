"""Memory inventory of a design and the block-RAM count yosys gives each memory.

A network's block RAM is not something to learn: every memory of every unit is fixed by the unit's parameters
(the MVU's per-PE weight and threshold ROMs, its input buffer and result FIFO, the sliding-window and max-pool
buffers, the FIFO in front of each unit), and yosys' `memory_libmap` maps each memory on its own by a cost rule
read from the target's library files. This module lists the memories (`inventory`) and replays that rule
(`map_memory`) for the two targets the dataset covers:

- ECP5 (`synth_ecp5`, yosys techlibs/lattice/brams_16kd.txt and lutrams_trellis.txt): DP16KD (true dual port,
  1024 x 18 .. 16384 x 1, cost 128), PDPW16KD (pseudo dual port up to 512 x 36, a 36-bit write port, cost 128),
  TRELLIS_DPR16X4 LUT RAM (16 x 4, cost 4, never for a ROM); soft logic costs 1 per RAM bit, 1/16 per ROM bit.
- Xilinx 7-series (`synth_xilinx -family xc7`, brams_xc4v.txt with HAS_SIZE_36 and lutrams_xc5v.txt): RAMB18
  (cost 129) and RAMB36 (cost 257) in true or simple dual port mode (SDP up to 36 / 72 bits wide), LUT RAM in
  single/dual/quad/simple-dual-port shapes (cost 8 or 7 per unit, scaled by width), soft logic 1 per RAM bit
  and 1/64 per ROM bit.

`memory_libmap` (passes/memory/memory_libmap.cc) prices each legal configuration of each RAM kind as
`(cost - widthscale) * repl + widthscale * mult_a * width / unit + 0.5 * read-mux bits + 0.5 * write-demux
enables + 2 * emulation score`, where a configuration is a base data width of the RAM, mult_a the address
ranges the memory spans at that width and repl the RAM instances its (byte-padded) data bits need; the cheapest
configuration wins unless soft logic is cheaper (compared as yosys does, with the costs truncated to integers).
The replay covers what the generators emit: one write port with a single enable (or none: a ROM) and one read
port; tests/test_estimate_memories.py checks it against yosys itself.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

FACTOR_MUX = 0.5
FACTOR_DEMUX = 0.5
FACTOR_EMU = 2


# How the generators use a memory: one synchronous read port and
#   rom          no write port (MVU weights and thresholds);
#   shared       a write port on the read port's address, reads of old data (the MVU input buffer);
#   ram          a write port on its own address, reads of old data (FIFOs, the sliding-window buffer);
#   transparent  a write port on its own address, the read port transparent to it (the max-pool row).
STYLES = ("rom", "shared", "ram", "transparent")


@dataclass(frozen=True)
class Memory:
    """One memory as yosys sees it: `depth` words of `width` bits used in one of the STYLES."""

    name: str
    depth: int
    width: int
    style: str

    @property
    def rom(self) -> bool:
        return self.style == "rom"

    @property
    def bits(self) -> int:
        return self.depth * self.width

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Memory:
        return cls(data["name"], int(data["depth"]), int(data["width"]), data["style"])


@dataclass(frozen=True)
class RamKind:
    """One RAM primitive configuration as a memory_libmap library declares it (after option expansion)."""

    name: str
    block: bool  # block RAM (counted as BRAM) or distributed (LUT RAM)
    abits: int
    dbits: tuple[int, ...]
    cost: float
    byte: int = 0
    widthscale: float = 0.0
    write_widths: tuple[int, int] | None = None  # (min, max) index into dbits of the write port
    # per memory style, the emulation score of the kind's cheapest port assignment (soft read-first, transparency
    # and data-register logic; read off yosys' `debug memory_libmap` for each style, see the tests); a style
    # missing here cannot be mapped to this kind (a ROM on LUT RAM: prune_rom; two addresses on a single port)
    emulation: tuple[tuple[str, int], ...] = ()
    cells: int = 1  # primitives per instance (a cascade is two)


def _scores(rom=None, shared=None, ram=None, transparent=None) -> tuple[tuple[str, int], ...]:
    given = {"rom": rom, "shared": shared, "ram": ram, "transparent": transparent}
    return tuple((style, score) for style, score in given.items() if score is not None)


_ECP5_BLOCK = dict(abits=14, cost=128, byte=9)
_XC7_TDP = _scores(rom=1, shared=0, ram=1, transparent=4)
_XC7_SDP = _scores(rom=1, shared=1, ram=1, transparent=4)
ECP5_RAMS = (
    RamKind("DP16KD", True, dbits=(1, 2, 4, 9, 18), emulation=_scores(1, 0, 7, 4), **_ECP5_BLOCK),
    RamKind(
        "PDPW16KD", True, dbits=(1, 2, 4, 9, 18, 36), write_widths=(5, 5), emulation=_scores(1, 7, 7, 4), **_ECP5_BLOCK
    ),
    RamKind("TRELLIS_DPR16X4", False, 4, (4,), 4, emulation=_scores(None, 1, 1, 4)),
)
XC7_RAMS = (
    RamKind("RAMB18E1", True, 14, (1, 2, 4, 9, 18), 129, byte=9, emulation=_XC7_TDP),  # TDP HALF
    RamKind("RAMB36E1", True, 15, (1, 2, 4, 9, 18, 36), 257, byte=9, emulation=_XC7_TDP),  # TDP FULL
    RamKind("RAMB36E1x2", True, 16, (1, 2, 4, 9), 513, byte=9, emulation=_XC7_TDP, cells=2),  # TDP CASCADE
    RamKind("RAMB18E1 SDP", True, 14, (1, 2, 4, 9, 18, 36), 129, byte=9, emulation=_XC7_SDP),  # SDP HALF
    RamKind("RAMB36E1 SDP", True, 15, (1, 2, 4, 9, 18, 36, 72), 257, byte=9, emulation=_XC7_SDP),  # SDP FULL
    *(
        RamKind(f"LUTRAM SP{a}", False, a, (w,), 8, widthscale=8, emulation=_scores(shared=0))
        for a, w in ((5, 8), (6, 4), (7, 2), (8, 1))
    ),
    *(
        RamKind(f"LUTRAM DP{a}", False, a, (w,), 8, widthscale=8, emulation=_scores(None, 0, 1, 4))
        for a, w in ((5, 4), (6, 2), (7, 1))
    ),
    *(
        RamKind(f"LUTRAM QP{a}", False, a, (w,), 7, widthscale=7, emulation=_scores(None, 0, 1, 4))
        for a, w in ((5, 2), (6, 1))
    ),
    *(
        RamKind(f"LUTRAM SDP{a}", False, a, (w,), 8, widthscale=7, emulation=_scores(None, 1, 1, 4))
        for a, w in ((5, 6), (6, 3))
    ),
)
LIBRARIES = {"ecp5": (ECP5_RAMS, 1 / 16), "xilinx": (XC7_RAMS, 1 / 64)}


@dataclass(frozen=True)
class Mapping:
    """What memory_libmap makes of one memory: a RAM kind (or soft logic) and how many instances."""

    kind: str  # a RamKind name, or "logic"
    block: bool
    instances: int
    cost: float
    mux_bits: int = 0  # read-data bits multiplexed in soft logic between address ranges ((mult_a - 1) x width)

    @property
    def bram(self) -> int:
        return self.instances if self.block else 0

    @property
    def lutram(self) -> int:
        return self.instances if not self.block else 0


def _config_cost(mem: Memory, ram: RamKind) -> tuple[float, int, int] | None:
    """The cheapest (cost, instances, mux bits) of `mem` on `ram` over its base widths, as memory_libmap's
    handle_geom."""
    score_emu = dict(ram.emulation).get(mem.style)
    if score_emu is None or mem.width <= 0:
        return None
    byte_width_log2 = 0
    for i, d in enumerate(ram.dbits):
        if ram.byte >= d:
            byte_width_log2 = i
    if ram.byte == 0:
        byte_width_log2 = len(ram.dbits) - 1
    best = None
    for base in range(len(ram.dbits)):
        unit_log2 = base
        if not mem.rom and ram.write_widths is not None:
            unit_log2 = min(unit_log2, ram.write_widths[1])
        if unit_log2 != base and best is not None:
            break
        unit = ram.dbits[unit_log2]
        if not mem.rom and ram.write_widths is not None and base < ram.write_widths[0] and base < byte_width_log2:
            continue  # the write port cannot be this narrow
        effective_byte = ram.byte if 0 < ram.byte <= unit else unit
        if mem.rom:
            effective_byte = 1
        swizzle = -(-mem.width // effective_byte) * effective_byte
        addresses = 1 << (ram.abits - base)
        mult_a = (mem.depth - 1) // addresses + 1
        repl = -(-(mult_a * swizzle) // unit)
        score_demux = mult_a if (not mem.rom and mult_a != 1) else 0
        score_mux = (mult_a - 1) * mem.width
        cost = (ram.cost - ram.widthscale) * repl
        cost += int(ram.widthscale * mult_a * mem.width) // unit
        cost += score_mux * FACTOR_MUX + score_demux * FACTOR_DEMUX + score_emu * FACTOR_EMU
        if best is None or cost < best[0]:
            best = (cost, repl, score_mux)
    return best


@functools.lru_cache(maxsize=65536)
def map_memory(mem: Memory, target: str) -> Mapping:
    """The RAM kind and instance count yosys' memory_libmap picks for `mem` on `target` (ecp5 or xilinx)."""
    rams, logic_cost_rom = LIBRARIES[_family(target)]
    logic_cost = mem.bits * (logic_cost_rom if mem.rom else 1.0)
    best = int(logic_cost)  # memory_libmap keeps the running best in an int
    choice = Mapping("logic", False, 0, logic_cost)
    for ram in rams:
        priced = _config_cost(mem, ram)
        if priced is not None and priced[0] < best:
            best = int(priced[0])
            choice = Mapping(ram.name, ram.block, priced[1] * ram.cells, priced[0], priced[2])
    return choice


def _family(target: str) -> str:
    if target == "ecp5":
        return "ecp5"
    if target == "xilinx":
        return "xilinx"
    raise KeyError(target)


MAPPED_TARGETS = ("ecp5", "xilinx")


# ---------------------------------------------------------------------------------------------------------------
# Inventory: the memories a unit's generator emits, from its parameters


# the parameters a unit's memories depend on: a node without all of them (a graph from elsewhere reusing an op
# name) gets no inventory rather than one made of the dataclass' defaults
_NEEDS = {
    "mvu": {"in_features", "out_features", "pe", "simd", "in_width", "w_width", "out_width"},
    "swg": {"in_height", "in_width", "channels", "kernel_size", "simd", "elem_width"},
    "maxpool": {"in_height", "in_width", "channels", "kernel_size", "simd", "elem_width"},
    "systolic": {"rows", "cols", "a_width", "w_width", "acc_depth", "k_max"},
}


def _params(op: str, features: dict[str, float]):
    """The unit's parameter dataclass rebuilt from its numeric features (None where it cannot be)."""
    from hardwire.errors import ParameterError
    from hardwire.gen import registry

    if not _NEEDS.get(op, {"-"}) <= features.keys():
        return None
    try:
        cls = registry.get(op).params
    except KeyError:
        return None
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in features:
            value = features[field.name]
            values[field.name] = bool(value) if isinstance(field.default, bool) else int(value)
        elif isinstance(field.default, str):  # a string parameter is stored one-hot, as `name=value`
            chosen = [key for key, v in features.items() if key.startswith(f"{field.name}=") and v]
            if chosen:
                values[field.name] = chosen[0].split("=", 1)[1]
    try:
        return cls(**values)
    except (ParameterError, ValueError, TypeError):
        return None


def _fifo(name: str, depth: int, width: int) -> list[Memory]:
    """amaranth's SyncFIFOBuffered(depth): a register for depth 1, else a depth - 1 memory and an output
    register."""
    if depth < 2 or width <= 0:
        return []
    return [Memory(name, depth - 1, width, "ram")]


def live_lanes(elements, element_width: int) -> int:
    """Bit lanes of a ROM that are not the same in every word: yosys' opt_mem removes the constant ones before
    memory_libmap prices the memory (thresholds spanning a small part of the accumulator range leave many).
    `elements`: (words, elements per word) integers, each stored in `element_width` bits (two's complement)."""
    values = np.asarray(elements, dtype=np.int64) & ((1 << element_width) - 1)
    bits = (values[..., None] >> np.arange(element_width)) & 1  # (words, elements, bit)
    return int((bits.min(axis=0) != bits.max(axis=0)).sum())


def inventory(op: str, features: dict[str, float], unit=None) -> list[Memory]:
    """Every memory of one unit (network stage or standalone block) with more than one word; [] for a unit whose
    generator keeps no memory or whose parameters are incomplete. With `unit` (the built MVU component, holding
    its weights and thresholds) a ROM's width is its count of live lanes, as yosys sees it; without, the full
    word width (an upper bound)."""
    out: list[Memory] = []
    if features.get("fifo_width"):
        out += _fifo("input_fifo", int(features.get("fifo_depth", 0)), int(features["fifo_width"]))
    p = _params(op, features) if op in _NEEDS else None
    if p is None:
        return out
    if op == "mvu":
        nf, sf = p.neuron_folds, p.synapse_folds
        for i in range(p.pe) if nf * sf > 1 else ():
            width = p.simd * p.w_width
            if unit is not None:  # word (f, s) holds weights[f * pe + i, s * simd:(s + 1) * simd]
                rows = np.asarray(unit.weights)[i :: p.pe]
                width = live_lanes(rows.reshape(nf * sf, p.simd), p.w_width)
            out.append(Memory(f"pe{i}_weights", nf * sf, width, "rom"))
        for i in range(p.pe) if p.thresholds_mode and nf > 1 else ():
            width = p.threshold_count * p.threshold_width
            if unit is not None and unit.thresholds is not None:
                width = live_lanes(np.asarray(unit.thresholds)[i :: p.pe], p.threshold_width)
            out.append(Memory(f"pe{i}_thresholds", nf, width, "rom"))
        if nf > 1 and sf > 1:
            out.append(Memory("input_buffer", sf, p.simd * p.in_width, "shared"))
        out_bits = p.out_width if p.thresholds_mode else p.acc_width
        out += _fifo("result_fifo", p.fifo_depth, p.pe * out_bits)
    elif op == "swg":
        out.append(Memory("buffer", max(p.buffer_words, 2), p.simd * p.elem_width, "ram"))
    elif op == "systolic":
        if p.weight_stationary:  # K tiles accumulate in an on-chip row memory
            out.append(Memory("accumulator", p.acc_depth, p.cols * p.acc_bits, "ram"))
        out += _fifo("result_fifo", p.fifo_depth, p.cols * p.acc_bits + 1)
    elif op == "maxpool" and p.kernel_size > 1:
        out.append(Memory("running_max", max(p.out_width * p.channel_beats, 2), p.simd * p.elem_width, "transparent"))
    return out


def node_memories(node) -> list[Memory]:
    """A design-graph node's memories: as recorded when the graph was built from the design, else from its
    parameters."""
    if node.memories is not None:
        return [Memory.from_dict(m) for m in node.memories]
    return inventory(node.op, node.features)


def memory_features(node) -> dict[str, float]:
    """Per unit: memory count, bits, ROM bits, and per target the predicted BRAM instances, LUT-RAM-mapped bits
    and bits left to soft logic (what a model of LUT/FF/BRAM counts needs to know)."""
    memories = node_memories(node)
    if not memories:
        return {}
    out = {
        "memories": float(len(memories)),
        "memory_bits": float(sum(m.bits for m in memories)),
        "rom_bits": float(sum(m.bits for m in memories if m.rom)),
        "memory_max_depth": float(max(m.depth for m in memories)),
    }
    for target in MAPPED_TARGETS:
        bram = lutram = lutram_bits = logic_bits = logic_rom_bits = mux_bits = 0
        for mem in memories:
            mapping = map_memory(mem, target)
            bram += mapping.bram
            lutram += mapping.lutram
            mux_bits += mapping.mux_bits
            if mapping.kind == "logic":
                logic_bits += mem.bits
                logic_rom_bits += mem.bits if mem.rom else 0
            elif not mapping.block:
                lutram_bits += mem.bits
        out[f"{target}.bram"] = float(bram)
        out[f"{target}.lutram"] = float(lutram)
        out[f"{target}.lutram_bits"] = float(lutram_bits)
        out[f"{target}.logic_memory_bits"] = float(logic_bits)
        out[f"{target}.logic_rom_bits"] = float(logic_rom_bits)
        out[f"{target}.memory_mux_bits"] = float(mux_bits)
    return out


# block families whose every memory the inventory lists (a block of another family may keep memories it does not)
COVERED_BLOCKS = ("mvu", "swg", "maxpool", "dwc", "systolic")


def predicted_bram(graph, target: str) -> int | None:
    """The BRAM count of a network, or of a block of a COVERED_BLOCKS family, by the rule: the sum over its
    memories of what `map_memory` gives each. None for another block or a target the rule does not cover."""
    return _predicted(graph, target, "bram")


def predicted_lutram(graph, target: str) -> int | None:
    """Likewise the LUT-RAM instances of its memories (the ECP5 LUTRAM count: TRELLIS_DPR16X4 cells; on Xilinx the
    shift registers yosys infers from delay lines are LUTRAM too and not in the inventory)."""
    return _predicted(graph, target, "lutram")


def _predicted(graph, target: str, label: str) -> int | None:
    if target not in MAPPED_TARGETS:
        return None
    if graph.kind != "network" and not (graph.kind == "block" and all(n.op in COVERED_BLOCKS for n in graph.nodes)):
        return None
    return sum(getattr(map_memory(m, target), label) for node in graph.nodes for m in node_memories(node))
