"""Designs drawn at random from legal parameter spaces: the inputs of the synthesis dataset.

A design is a JSON spec that rebuilds it exactly (`build_network`, `build_block`), so a dataset row can be
regenerated, and its hash (`design_hash`) keys the row. Two kinds:

- networks: integer MLPs and CNNs built directly as hls.graph chains (random weights and sorted random
  thresholds, no training), with a random legal folding (PE divides the outputs, SIMD the input channels);
  the RTL back end lays them out with sliding-window generators, max pooling, width converters and FIFOs
  exactly as `hardwire compile` does;
- blocks: every gen/ block family over random legal parameters (a table of ranges per family; a draw the
  block's own validation rejects is drawn again).

`size="small"` is the training distribution; `size="large"` draws deeper and wider networks than any small
one (the generalization split).
"""

from __future__ import annotations

import numpy as np

from hardwire.cache import digest
from hardwire.errors import ParameterError

# Networks: the small distribution and the larger one held out for generalization.
NETWORK_SIZES = {
    "small": {
        "mlp_layers": (1, 4),
        "mlp_width": (8, 128),
        "mlp_input": (8, 256),
        "cnn_convs": (1, 2),
        "cnn_image": (4, 10),
        "cnn_channels": (1, 12),
        "max_weight_bits": 96_000,
    },
    "large": {
        "mlp_layers": (5, 8),
        "mlp_width": (128, 512),
        "mlp_input": (128, 512),
        "cnn_convs": (3, 4),
        "cnn_image": (10, 16),
        "cnn_channels": (8, 24),
        "max_weight_bits": 400_000,
    },
}


# The generator version of each gen/ family when the dataset was first made (rows did not record it). A design
# built by a later version of a generator is a different design: from then on its hash covers the versions of the
# generators that build it, so the dataset synthesizes it anew, and a row whose hash no longer matches its spec
# (`is_stale`) describes hardware the generators no longer make and is neither trained nor tested on.
FIRST_VERSIONS = {"attention": "3", "softmax": "3"}  # every other family: "1"
NETWORK_UNITS = ("mvu", "swg", "maxpool", "dwc")  # the families a compiled network is built from


def generator_versions(spec: dict) -> dict:
    """{family: version} of the generators that build `spec`, where they differ from FIRST_VERSIONS."""
    from hardwire.gen import registry

    kind = spec.get("kind")
    families = (spec["block"],) if kind == "block" else NETWORK_UNITS if kind in ("network", "model") else ()
    out = {}
    for name in families:
        try:
            version = registry.get(name).generator_version
        except KeyError:
            continue
        if version != FIRST_VERSIONS.get(name, "1"):
            out[name] = version
    return out


def design_hash(spec: dict) -> str:
    versions = generator_versions(spec)
    return digest("design", {**spec, "generators": versions} if versions else spec)


def is_stale(row: dict) -> bool:
    """Whether a dataset row was synthesized from a design that today's generators no longer build."""
    spec = row.get("spec")
    return isinstance(spec, dict) and "design_hash" in row and row["design_hash"] != design_hash(spec)


def wants_fmax(spec_hash: str, share: float) -> bool:
    """Whether a design is among the `share` that are also placed and routed (nextpnr takes minutes where
    yosys takes seconds): decided by its hash, so every run and every worker agrees."""
    return int(spec_hash[:8], 16) < share * (1 << 32)


def _log_uniform_int(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(round(float(np.exp(rng.uniform(np.log(lo), np.log(hi))))))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _small_divisor(rng: np.random.Generator, n: int, cap: int = 64) -> int:
    """A divisor of n, biased to small ones (cheap foldings are what users and budgets pick most)."""
    options = [d for d in _divisors(n) if d <= cap]
    weights = 1.0 / np.sqrt(np.arange(1, len(options) + 1))
    return int(rng.choice(options, p=weights / weights.sum()))


# ---------------------------------------------------------------------------------------------------------------
# Networks


def sample_network(rng: np.random.Generator, size: str = "small") -> dict:
    """A random legal network spec; its weights come from `seed` when it is built."""
    ranges = NETWORK_SIZES[size]
    for _ in range(100):
        spec = _draw_network(rng, ranges)
        if _weight_bits(spec) <= ranges["max_weight_bits"]:
            return spec
    raise RuntimeError("no network under the weight-bit cap in 100 draws")


def _draw_network(rng, ranges) -> dict:
    a_bits = int(rng.integers(1, 9))
    layers: list[dict] = []
    if rng.random() < 0.5:
        image = int(rng.integers(*ranges["cnn_image"], endpoint=True))
        channels = int(rng.integers(1, 4))
        shape = [image, image, channels]
        h, c = image, channels
        for _ in range(int(rng.integers(*ranges["cnn_convs"], endpoint=True))):
            kernel = int(rng.integers(1, min(5, h) + 1))
            padding = int(rng.integers(0, kernel // 2 + 1))
            out = int(rng.integers(*ranges["cnn_channels"], endpoint=True))
            layers.append(
                {
                    "op": "conv",
                    "out": out,
                    "kernel": kernel,
                    "stride": 1,
                    "padding": padding,
                    "pe": _small_divisor(rng, out, 16),
                    "simd": _small_divisor(rng, c, 16),
                }
            )
            h = h + 2 * padding - kernel + 1
            c = out
            if h >= 4 and rng.random() < 0.5:
                layers.append({"op": "maxpool", "kernel": 2})
                h //= 2
        k = h * h * c
    else:
        k = _log_uniform_int(rng, *ranges["mlp_input"])
        shape = [1, 1, k]
    for i in range(int(rng.integers(*ranges["mlp_layers"], endpoint=True)) if not layers else int(rng.integers(1, 3))):
        out = _log_uniform_int(rng, *ranges["mlp_width"])
        layers.append(
            {"op": "dense", "out": out, "pe": _small_divisor(rng, out, 32), "simd": _small_divisor(rng, k, 64)}
        )
        k = out
    for layer in layers:
        if layer["op"] != "maxpool":
            layer["w_bits"] = int(rng.integers(1, 9))
            layer["out_bits"] = int(rng.integers(1, 5))
    last = next(layer for layer in reversed(layers) if layer["op"] != "maxpool")
    if rng.random() < 0.7:
        last["out_bits"] = 0  # raw accumulators out, as the zoo networks end
    return {
        "kind": "network",
        "seed": int(rng.integers(0, 2**31)),
        "a_bits": a_bits,
        "a_signed": bool(rng.random() < 0.3),
        "shape": shape,
        "layers": layers,
    }


def _weight_bits(spec: dict) -> int:
    total = 0
    h, w, c = spec["shape"]
    for layer in spec["layers"]:
        if layer["op"] == "maxpool":
            h, w = h // 2, w // 2
            continue
        k = layer.get("kernel", 1)
        total += layer["out"] * k * k * c * layer["w_bits"]
        if layer["op"] == "conv":
            h = h + 2 * layer["padding"] - k + 1
            w = w + 2 * layer["padding"] - k + 1
        else:
            h = w = 1
        c = layer["out"]
    return total


def build_network(spec: dict):
    """(IntGraph, FoldingResult) of a network spec: random weights and thresholds from the spec's seed."""
    from hardwire.hls.graph import InputLayer, IntGraph, IntType, MatVecLayer, MaxPoolLayer
    from hardwire.hls.rtl import solve_folding

    rng = np.random.default_rng(spec["seed"])
    in_type = IntType(spec["a_bits"], spec["a_signed"])
    h, w, c = spec["shape"]
    layers = []
    folds = {}
    dtype = in_type
    for i, layer in enumerate(spec["layers"]):
        name = f"l{i}"
        if layer["op"] == "maxpool":
            layers.append(MaxPoolLayer(name, (h, w, c), dtype, layer["kernel"]))
            h, w = h // layer["kernel"], w // layer["kernel"]
            continue
        kernel = layer.get("kernel", 1)
        if layer["op"] == "dense":  # a flatten before a dense layer: one vector of h * w * c
            h, w, c = 1, 1, h * w * c
        w_type = IntType(layer["w_bits"], True) if layer["w_bits"] > 1 else IntType(1, False)
        weights = rng.integers(w_type.min, w_type.max + 1, size=(layer["out"], kernel * kernel * c))
        out_type = IntType(layer["out_bits"], False) if layer["out_bits"] else None
        mv = MatVecLayer(
            name,
            (h, w, c),
            dtype,
            weights,
            w_type,
            None,
            out_type,
            1.0 if out_type else None,
            kernel=kernel,
            stride=layer.get("stride", 1),
            padding=layer.get("padding", 0),
        )
        if out_type is not None:
            lo, hi = mv.acc_range
            count = (1 << out_type.bits) - 1
            # thresholds around the bulk of the accumulator distribution, as trained networks place them
            spread = max(1, int(np.sqrt(mv.in_features) * max(abs(in_type.max), 1) * max(abs(w_type.max), 1) / 2))
            mv.thresholds = np.sort(
                np.clip(rng.integers(-spread, spread + 1, size=(layer["out"], count)), lo, hi + 1), axis=1
            )
            dtype = out_type
        layers.append(mv)
        folds[name] = (layer["pe"], layer["simd"])
        h, w, _ = mv.out_shape
        c = layer["out"]
    graph = IntGraph(
        f"net_{design_hash(spec)}",
        InputLayer("input", tuple(spec["shape"]), in_type, 1.0, "NHWC"),
        layers,
        layers[-1].out_type if isinstance(layers[-1], MatVecLayer) else dtype,
    )
    return graph, solve_folding(graph, folds=folds)


# ---------------------------------------------------------------------------------------------------------------
# Blocks


def _pick(rng, options):
    return options[int(rng.integers(0, len(options)))]


def _block_space(name: str, rng: np.random.Generator) -> dict:
    """One draw of a block family's parameters (a draw may still be illegal: the caller retries)."""
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    coin = lambda: bool(rng.random() < 0.5)  # noqa: E731
    if name == "systolic":
        return {
            "rows": r(1, 8),
            "cols": r(1, 8),
            "a_width": r(2, 8),
            "w_width": r(2, 8),
            "a_signed": coin(),
            "w_signed": coin(),
            "dataflow": _pick(rng, ["weight_stationary", "output_stationary"]),
            "k_max": _pick(rng, [64, 256, 1024, 4096]),
            "acc_depth": _pick(rng, [16, 64, 256]),
        }
    if name == "mvu":
        k, n = _log_uniform_int(rng, 4, 128), _log_uniform_int(rng, 2, 64)
        return {
            "in_features": k,
            "out_features": n,
            "simd": _small_divisor(rng, k),
            "pe": _small_divisor(rng, n, 16),
            "in_width": r(1, 8),
            "in_signed": coin(),
            "w_width": r(1, 8),
            "w_signed": coin(),
            "out_width": r(0, 4),
            "content_seed": r(0, 1000),
        }
    if name == "swg":
        c = r(1, 16)
        k = r(1, 5)
        return {
            "in_height": r(max(k, 3), 16),
            "in_width": r(max(k, 3), 16),
            "channels": c,
            "kernel_size": k,
            "stride": r(1, 2),
            "padding": r(0, k // 2),
            "simd": _small_divisor(rng, c),
            "elem_width": r(1, 8),
            "elem_signed": coin(),
            "line_buffer": coin(),
        }
    if name == "maxpool":
        c = r(1, 16)
        return {
            "in_height": r(2, 16),
            "in_width": r(2, 16),
            "channels": c,
            "kernel_size": r(2, 3),
            "simd": _small_divisor(rng, c),
            "elem_width": r(1, 8),
            "elem_signed": coin(),
        }
    if name == "dwc":
        a, b = r(1, 16), r(1, 16)
        lcm = a * b // int(np.gcd(a, b))
        return {
            "in_lanes": a,
            "out_lanes": b,
            "elem_width": r(1, 8),
            "elem_signed": coin(),
            "frame_elements": lcm * r(1, 4),
        }
    if name == "bitserial":
        return {
            "rows": r(1, 4),
            "lanes": r(1, 8),
            "simd": r(1, 8),
            "w_width": r(2, 8),
            "w_signed": coin(),
            "a_max": r(2, 16),
            "a_signed": coin(),
            "msb_first": coin(),
            "k_max": _pick(rng, [64, 256, 1024, 4096]),
        }
    if name == "bitmod":
        lanes = _pick(rng, [2, 4, 8])
        group = _pick(rng, [16, 32, 64, 128])
        return {
            "pes": r(1, 4),
            "lanes": lanes,
            "group_size": group,
            "a_width": r(4, 8),
            "k_max": group * _pick(rng, [4, 16, 32]),
        }
    if name == "bitvert":
        g = r(4, 16)
        return {
            "group_size": g,
            "lanes": r(1, max(1, g // 2)),
            "w_width": r(4, 8),
            "a_width": r(4, 8),
            "a_signed": coin(),
            "pes": r(1, 4),
            "k_max": g * _pick(rng, [8, 32, 64]),
        }
    if name == "sparse":
        w_width = _pick(rng, [4, 8])
        packing = w_width == 4 and coin()
        return {
            "lanes": _pick(rng, [2, 4, 8]),
            "chains": _pick(rng, [2, 4]) if packing else r(1, 4),
            "patterns": _pick(rng, ["dense", "dense,2:4", "dense,1:2,2:4", "dense,1:2,2:4,1:4,2:8,4:8"]),
            "m_max": 8,
            "w_width": w_width,
            "k_max": _pick(rng, [256, 1024, 4096]),
            "int4_packing": packing,
        }
    if name == "softmax":
        return {
            "variant": _pick(rng, ["three_pass", "two_pass", "online", "unified_max"]),
            "n_max": _pick(rng, [8, 16, 32, 64, 128]),
            "in_width": r(6, 12),
            "in_frac": r(2, 5),
            "out_width": r(6, 10),
        }
    if name == "attention":
        return {"head_dim": _pick(rng, [2, 4, 8]), "tile": _pick(rng, [2, 4]), "seq_max": _pick(rng, [8, 16, 32])}
    if name == "softmax_online_pipelined":
        return {
            "variant": "online_pipelined",
            "n_max": _pick(rng, [8, 16, 32, 64, 128]),
            "in_width": r(6, 12),
            "in_frac": r(2, 5),
            "out_width": r(6, 10),
            "lanes": r(6, 12),
        }
    raise KeyError(name)


# Options added to a family after its first dataset, drawn from their own random stream (`sample_designs`):
# option -> (the registry block it builds, the family whose draws it may take the place of, the share it takes)
ADDED_OPTIONS = {"softmax_online_pipelined": ("softmax", "softmax", 0.2)}

BLOCK_FAMILIES = (
    "systolic",
    "mvu",
    "swg",
    "maxpool",
    "dwc",
    "bitserial",
    "bitmod",
    "bitvert",
    "sparse",
    "softmax",
    "attention",
)


def sample_block(rng: np.random.Generator, name: str) -> dict:
    """A legal draw of a block family (or of an added option, `ADDED_OPTIONS`)."""
    from hardwire.gen import registry

    block_name = ADDED_OPTIONS[name][0] if name in ADDED_OPTIONS else name
    block = registry.get(block_name)
    for _ in range(200):
        params = _block_space(name, rng)
        try:
            block.params(**params)
        except (ParameterError, ValueError):
            continue
        return {"kind": "block", "block": block_name, "params": params}
    raise RuntimeError(f"no legal {name} parameters in 200 draws")


def build_block(spec: dict):
    """(Block, params) of a block spec."""
    from hardwire.gen import registry

    block = registry.get(spec["block"])
    return block, block.params(**spec["params"])


def sample_designs(
    seed: int, count: int, *, size: str = "small", network_share: float = 0.6, added_options: bool = True
) -> list[dict]:
    """`count` specs drawn from one seed: design i is the same for every run with this seed and size, so a
    resumed run draws exactly the designs the killed one would have drawn.

    An added option (`ADDED_OPTIONS`) takes the place of a share of its family's draws, decided and drawn from a
    stream of its own: the main stream is consumed exactly as before the option existed, so every other design
    (networks, the other families, the family's draws it does not take) is the one it was. `added_options=False`
    draws the designs as they were before any option was added."""
    rng = np.random.default_rng([seed, 0 if size == "small" else 1])
    added = np.random.default_rng([seed, 0 if size == "small" else 1, 2])
    specs = []
    for _ in range(count):
        if size == "large" or rng.random() < network_share:
            spec = sample_network(rng, size)
        else:
            family = _pick(rng, list(BLOCK_FAMILIES))
            spec = sample_block(rng, family)
            for option, (_, takes_from, share) in ADDED_OPTIONS.items():
                if takes_from == family and added.random() < share and added_options:
                    spec = sample_block(added, option)
                    break
        specs.append(spec)
    return specs
