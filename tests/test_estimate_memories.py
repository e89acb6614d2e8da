"""The memory inventory and the replay of yosys' memory_libmap rule (estimate/memories.py) against yosys itself,
and the design features' determinism.

The memories are built with amaranth exactly as the generators build theirs (a ROM with seeded random content or
content whose top lanes are constant, as thresholds leave them; a RAM with a write port on its own address, on
the read port's address, or with a transparent read port), one design per target holding all of them; the rule's
BRAM count of each memory is compared with the block-RAM primitives yosys makes of it in that design.
"""

import random
import re

import numpy as np
import pytest
import torch
from amaranth.back import verilog
from amaranth.hdl import Module, unsigned
from amaranth.lib import fifo, memory, wiring
from amaranth.lib.wiring import In, Out

from hardwire.estimate import designs
from hardwire.estimate.dataset import design_graph
from hardwire.estimate.features import FEATURE_VERSION, DesignGraph, flat_features, node_features
from hardwire.estimate.memories import Memory, inventory, live_lanes, map_memory, predicted_bram
from hardwire.estimate.predict import DEFAULT_WEIGHTS, Estimator, WeightsError
from hardwire.flows.synth import synth

# (depth, width, style, content): content "random" fills every lane, "narrow" keeps values in 0..2**5 - 1 (a
# threshold-like ROM: yosys removes the constant upper lanes before it prices the memory)
CASES = [
    (750, 6, "rom", "random"),  # ecp5: one DP16KD; xilinx: soft logic (ROM bits cost 1/64 there)
    (126, 9, "rom", "random"),  # both: soft logic
    (3519, 5, "rom", "random"),  # one PDPW16KD / RAMB18 (packed: 36-bit words hold seven 5-bit ones)
    (85, 96, "rom", "random"),  # ecp5: three PDPW16KD; xilinx: logic
    (77, 120, "rom", "narrow"),  # 120 bits wide, 5 live lanes: soft logic on both
    (2399, 8, "ram", "fifo"),  # a FIFO: two DP16KD / one RAMB36
    (162, 8, "ram", "fifo"),  # LUT RAM (a DP16KD would need read-first and transparency emulation)
    (197, 24, "ram", "fifo"),  # one PDPW16KD / RAMB18
    (300, 20, "transparent", None),  # the max-pool row: one block RAM
    (38, 30, "shared", None),  # the MVU input buffer: LUT RAM
]


def _content(depth, width, content, seed):
    rng = random.Random(seed)
    return [rng.getrandbits(5 if content == "narrow" else width) for _ in range(depth)]


class OneMemory(wiring.Component):
    """A memory used as the generators use it, its ports on the component's ports."""

    def __init__(self, depth, width, style, content, seed):
        self.depth, self.width, self.style, self.content, self.seed = depth, width, style, content, seed
        super().__init__(
            {
                "wa": In(range(depth)),
                "ra": In(range(depth)),
                "wd": In(width),
                "we": In(1),
                "re": In(1),
                "rd": Out(width),
            }
        )

    def elaborate(self, platform):
        m = Module()
        if self.content == "fifo":  # amaranth's SyncFIFOBuffered: a depth - 1 memory and an output register
            m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=self.width, depth=self.depth + 1)
            m.d.comb += [
                queue.w_data.eq(self.wd),
                queue.w_en.eq(self.we),
                queue.r_en.eq(self.re),
                self.rd.eq(queue.r_data),
            ]
            return m
        rom = self.style == "rom"
        init = _content(self.depth, self.width, self.content, self.seed) if rom else []
        m.submodules.storage = storage = memory.Memory(shape=unsigned(self.width), depth=self.depth, init=init)
        write = None
        if not rom:
            write = storage.write_port()
            m.d.comb += [write.addr.eq(self.wa), write.data.eq(self.wd), write.en.eq(self.we)]
        read = storage.read_port(transparent_for=(write,) if self.style == "transparent" else ())
        m.d.comb += [read.addr.eq(self.wa if self.style == "shared" else self.ra), self.rd.eq(read.data)]
        if self.style == "transparent":
            m.d.comb += read.en.eq(self.re)
        return m


class AllMemories(wiring.Component):
    def __init__(self):
        self.units = [OneMemory(*case, seed=i) for i, case in enumerate(CASES)]
        for unit in self.units:
            unit._MustUse__silence = True  # elaborated through this component
        super().__init__(
            {f"rd{i}": Out(u.width) for i, u in enumerate(self.units)}
            | {"wa": In(16), "ra": In(16), "wd": In(128), "we": In(1), "re": In(1)}
        )

    def elaborate(self, platform):
        m = Module()
        for i, unit in enumerate(self.units):
            m.submodules[f"m{i}"] = unit
            m.d.comb += [
                unit.wa.eq(self.wa),
                unit.ra.eq(self.ra),
                unit.wd.eq(self.wd),
                unit.we.eq(self.we),
                unit.re.eq(self.re),
                getattr(self, f"rd{i}").eq(unit.rd),
            ]
        return m


def _rule_memory(i, depth, width, style, content) -> Memory:
    if style == "rom":  # the lanes not constant over the words (what opt_mem leaves)
        words = _content(depth, width, content, i)
        width = sum(len({(word >> bit) & 1 for word in words}) > 1 for bit in range(width))
    return Memory(f"m{i}", depth, width, style)


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    path = tmp_path_factory.mktemp("memories") / "memories.v"
    path.write_text(verilog.convert(AllMemories(), name="memories"))
    return path


@pytest.mark.parametrize("target", ["ecp5", "xilinx"])
def test_memory_rule_gives_yosys_block_ram_count_per_memory(tool_cache, design, target):
    report = synth([design], "memories", target)
    log = report.log_path.read_text()
    # which RAM kind yosys gave each memory, from its memory_libmap log lines
    kinds = {}
    for match in re.finditer(
        r"(?:mapping memory \S*?\.m(\d+)\.\S+ via (\S+)|using FF mapping for memory \S*?\.m(\d+)\.)", log
    ):
        index = int(match.group(1) or match.group(3))
        kinds[index] = match.group(2) or "logic"
    rule = [map_memory(_rule_memory(i, *case), target) for i, case in enumerate(CASES)]
    assert len(kinds) == len(CASES)
    for i, mapping in enumerate(rule):
        assert ("BLOCKRAM" in kinds[i] or "16KD" in kinds[i]) == mapping.block, (CASES[i], kinds[i], mapping)
        assert (kinds[i] == "logic") == (mapping.kind == "logic"), (CASES[i], kinds[i], mapping)
    assert report.bram == sum(mapping.bram for mapping in rule), (report.cells, rule)


def test_live_lanes_counts_lanes_that_differ_between_words():
    words = np.array([[0b0101, -1], [0b0111, -2], [0b0101, -1]])  # element 0: bit 1 varies; element 1: bit 0
    assert live_lanes(words, 4) == 2
    assert live_lanes(np.zeros((5, 3), dtype=int), 8) == 0


def test_network_features_are_deterministic_and_carry_the_content_aware_inventory():
    spec = next(s for s in designs.sample_designs(5, 20) if s["kind"] == "network" and len(s["layers"]) > 1)
    first, second = design_graph(spec), design_graph(spec)
    assert first.to_dict() == second.to_dict()
    assert first.to_dict()["feature_version"] == FEATURE_VERSION
    assert flat_features(first) == flat_features(DesignGraph.from_dict(second.to_dict()))
    mvu = [node for node in first.nodes if node.op == "mvu"]
    assert mvu and all(node.memories is not None for node in mvu)
    for node in mvu:
        # the recorded (content-aware) ROMs are never wider than the parameters' words
        by_name = {m.name: m for m in inventory(node.op, node.features)}
        for recorded in node.memories:
            assert recorded["width"] <= by_name[recorded["name"]].width
        f = node_features(node)
        assert {"ecp5.bram", "xilinx.bram", "finn_lut", "finn_adder_tree_luts"} <= f.keys()
    assert predicted_bram(first, "ecp5") == sum(node_features(n).get("ecp5.bram", 0) for n in first.nodes)


def test_a_node_without_its_parameters_gets_no_inventory():
    assert inventory("mvu", {"pe": 2.0, "simd": 4.0}) == []


def test_weights_of_another_feature_version_are_refused_in_one_line(tmp_path):
    weights = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    weights["feature_version"] = "1"
    path = tmp_path / "old.pt"
    torch.save(weights, path)
    with pytest.raises(WeightsError) as error:
        Estimator.load(path)
    message = str(error.value)
    assert "\n" not in message and "features version 1" in message and "hardwire dataset train" in message


def test_rule_labels_are_split_over_units_by_the_rule():
    spec = next(s for s in designs.sample_designs(5, 20) if s["kind"] == "network" and len(s["layers"]) > 1)
    graph = design_graph(spec)
    estimate = Estimator.load().estimate(graph, "ecp5")
    assert "bram" in estimate.by_rule and estimate.resources["bram"] == predicted_bram(graph, "ecp5")
    for unit, node in zip(estimate.per_node, graph.nodes):
        assert unit["bram"] == sum(map_memory(Memory.from_dict(m), "ecp5").bram for m in node.memories or [])
    assert sum(unit["bram"] for unit in estimate.per_node) == estimate.resources["bram"]
