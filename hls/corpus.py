"""A corpus of real architectures: the MLPerf Tiny models, written as Brevitas modules the way their authors
publish them (random weights), exported with `export_qonnx` as a user would, for the compile path to take.

* ResNet-8 (MLPerf Tiny image classification, `resnet_v1_eembc`): a 3 x 3 stem convolution, three stacks of one
  basic block each (two 3 x 3 convolutions, batch norm, ReLU; stacks 2 and 3 halve the image with a stride-2
  convolution and a strided 1 x 1 projection on the shortcut), an average pool over the whole last feature map
  and a dense classifier. The published model has 16/32/64 channels on 32 x 32 x 3 images; "resnet8" here
  keeps the image and narrows the channels to 8/16/32, "resnet8-tiny" is 8 x 8 x 3 with 4/8/8.
* DS-CNN (MLPerf Tiny keyword spotting, `kws_ref_model`): a strided stem convolution on the 49 x 10 MFCC
  image, depthwise-separable blocks (3 x 3 depthwise convolution, batch norm, ReLU, 1 x 1 pointwise
  convolution, batch norm, ReLU), an average pool over the whole 25 x 5 map and a dense classifier of 12
  keywords. The published stem is 10 x 4 (stride 2, "same" padding); hardwire's window generator takes square
  kernels, so the stem here is 3 x 3 (stride 2, padding 1), which gives the same 25 x 5 map. The published
  model has 64 channels and 4 blocks; "dscnn" has 32 and 4, "dscnn-tiny" 4 and 1.
* The anomaly-detection autoencoder (MLPerf Tiny, ToyADMOS): dense layers 640-128-128-128-8-128-128-128-640
  with batch norm and ReLU, the last layer linear ("autoencoder"); "autoencoder-tiny" is 64-16-16-4-16-16-64.

Quantization: 8-bit signed inputs, 4-bit weights and activations, Brevitas' fixed-point (power-of-two scale)
quantizers, so that qonnx' float execution is exact and the hardware must match it bit for bit. The random
weights are seeded; the batch norms' statistics and the activation scales are calibrated on random inputs (a
forward pass in training mode) so that every quantizer spreads over its levels instead of saturating.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardwire.errors import ParameterError

# Bump when a model definition or its calibration changes (it names the exported file's cache entry).
CORPUS_VERSION = 1
WEIGHT_BITS = 4
ACT_BITS = 4
INPUT_BITS = 8
CALIBRATION_BATCHES = 8


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    family: str  # "resnet8", "dscnn", "autoencoder"
    input_shape: tuple[int, ...]  # the model's input, batch 1
    options: tuple  # keyword arguments of the family's module, as pairs
    target_ii: int  # the initiation interval (cycles) the folding aims at, for `hardwire compile --fps`
    slow: bool = False  # too big for the default test run
    seed: int = 0

    @property
    def kwargs(self) -> dict:
        return dict(self.options)

    def fps(self, clock_mhz: float = 100.0) -> float:
        """The `fps` option that asks the folding for `target_ii` cycles per inference."""
        return clock_mhz * 1e6 / self.target_ii


SPECS: dict[str, CorpusSpec] = {
    s.name: s
    for s in (
        CorpusSpec("resnet8-tiny", "resnet8", (1, 3, 8, 8), (("channels", (4, 8, 8)),), 1024),
        CorpusSpec("resnet8", "resnet8", (1, 3, 32, 32), (("channels", (8, 16, 32)),), 9216, slow=True),
        CorpusSpec("dscnn-tiny", "dscnn", (1, 1, 49, 10), (("channels", 4), ("blocks", 1)), 1024),
        CorpusSpec("dscnn", "dscnn", (1, 1, 49, 10), (("channels", 32), ("blocks", 4)), 4096, slow=True),
        CorpusSpec("autoencoder-tiny", "autoencoder", (1, 64), (("dims", (64, 16, 16, 4, 16, 16, 64)),), 64),
        CorpusSpec(
            "autoencoder",
            "autoencoder",
            (1, 640),
            (("dims", (640, 128, 128, 128, 8, 128, 128, 128, 640)),),
            2048,
            slow=True,
        ),
    )
}


def get_spec(name: str) -> CorpusSpec:
    if name not in SPECS:
        raise ParameterError("network", name, " | ".join(SPECS))
    return SPECS[name]


# ---------------------------------------------------------------------------------------------------------------
# The modules


def _act(bits: int = ACT_BITS, signed: bool = False) -> dict:
    from brevitas.quant import Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    quant = Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint
    return {"act_quant": quant, "bit_width": bits, "return_quant_tensor": False}


def _w(bits: int = WEIGHT_BITS) -> dict:
    from brevitas.quant import Int8WeightPerTensorFixedPoint

    return {"weight_quant": Int8WeightPerTensorFixedPoint, "weight_bit_width": bits}


def _modules():
    """The module classes (defined here so that importing this file does not import torch and Brevitas)."""
    import brevitas.nn as qnn
    from torch import nn

    class BasicBlock(nn.Module):
        """ResNet v1 basic block: conv-bn-relu, conv-bn, + shortcut (identity, or a strided 1 x 1 projection
        with its batch norm), relu. Each branch ends in a quantizer, so the add sums two integer tensors."""

        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = qnn.QuantConv2d(cin, cout, 3, stride=stride, padding=1, bias=False, **_w())
            self.bn1, self.relu1 = nn.BatchNorm2d(cout), qnn.QuantReLU(**_act())
            self.conv2 = qnn.QuantConv2d(cout, cout, 3, padding=1, bias=False, **_w())
            self.bn2, self.q2 = nn.BatchNorm2d(cout), qnn.QuantIdentity(**_act(signed=True))
            self.projection = stride != 1 or cin != cout
            if self.projection:
                self.short = qnn.QuantConv2d(cin, cout, 1, stride=stride, bias=False, **_w())
                self.short_bn, self.short_q = nn.BatchNorm2d(cout), qnn.QuantIdentity(**_act(signed=True))
            self.join = qnn.QuantReLU(**_act())

        def forward(self, x):
            y = self.q2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
            shortcut = self.short_q(self.short_bn(self.short(x))) if self.projection else x
            return self.join(y + shortcut)

    class ResNet8(nn.Module):
        """MLPerf Tiny's ResNet-8 (resnet_v1_eembc): stem, three stacks of one basic block, average pool over
        the whole map, dense classifier."""

        def __init__(self, channels=(16, 32, 64), in_channels: int = 3, classes: int = 10, image: int = 32):
            super().__init__()
            c0, c1, c2 = channels
            self.inp = qnn.QuantIdentity(**_act(INPUT_BITS, signed=True))
            self.stem = qnn.QuantConv2d(in_channels, c0, 3, padding=1, bias=False, **_w())
            self.bn0, self.relu0 = nn.BatchNorm2d(c0), qnn.QuantReLU(**_act())
            self.stack1 = BasicBlock(c0, c0, 1)
            self.stack2 = BasicBlock(c0, c1, 2)
            self.stack3 = BasicBlock(c1, c2, 2)
            self.pool = nn.AvgPool2d(image // 4)  # AveragePooling2D(pool_size=8) at 32 x 32
            self.pool_q = qnn.QuantIdentity(**_act())
            self.fc = qnn.QuantLinear(c2, classes, bias=True, **_w())

        def forward(self, x):
            x = self.relu0(self.bn0(self.stem(self.inp(x))))
            x = self.stack3(self.stack2(self.stack1(x)))
            return self.fc(self.pool_q(self.pool(x)).flatten(1))

    class DSCNN(nn.Module):
        """MLPerf Tiny's DS-CNN for keyword spotting: strided stem, depthwise-separable blocks, average pool over
        the whole map, dense classifier."""

        def __init__(self, channels: int = 64, blocks: int = 4, classes: int = 12, image=(49, 10)):
            super().__init__()
            self.inp = qnn.QuantIdentity(**_act(INPUT_BITS, signed=True))
            self.stem = qnn.QuantConv2d(1, channels, 3, stride=2, padding=1, bias=False, **_w())
            self.bn0, self.relu0 = nn.BatchNorm2d(channels), qnn.QuantReLU(**_act())
            layers = []
            for _ in range(blocks):
                layers += [
                    qnn.QuantConv2d(channels, channels, 3, padding=1, groups=channels, bias=False, **_w()),
                    nn.BatchNorm2d(channels),
                    qnn.QuantReLU(**_act()),
                    qnn.QuantConv2d(channels, channels, 1, bias=False, **_w()),
                    nn.BatchNorm2d(channels),
                    qnn.QuantReLU(**_act()),
                ]
            self.blocks = nn.Sequential(*layers)
            self.pool = nn.AvgPool2d(((image[0] + 1) // 2, (image[1] + 1) // 2))  # the whole 25 x 5 map
            self.pool_q = qnn.QuantIdentity(**_act())
            self.fc = qnn.QuantLinear(channels, classes, bias=True, **_w())

        def forward(self, x):
            x = self.blocks(self.relu0(self.bn0(self.stem(self.inp(x)))))
            return self.fc(self.pool_q(self.pool(x)).flatten(1))

    class AnomalyAutoencoder(nn.Module):
        """MLPerf Tiny's anomaly-detection autoencoder: dense-bn-relu layers down to a bottleneck and back up,
        the reconstruction layer linear."""

        def __init__(self, dims=(640, 128, 128, 128, 8, 128, 128, 128, 640)):
            super().__init__()
            layers = [qnn.QuantIdentity(**_act(INPUT_BITS, signed=True))]
            for cin, cout in zip(dims[:-2], dims[1:-1]):
                layers += [
                    qnn.QuantLinear(cin, cout, bias=False, **_w()),
                    nn.BatchNorm1d(cout),
                    qnn.QuantReLU(**_act()),
                ]
            layers.append(qnn.QuantLinear(dims[-2], dims[-1], bias=True, **_w()))
            self.layers = nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

    return {"resnet8": ResNet8, "dscnn": DSCNN, "autoencoder": AnomalyAutoencoder}


def make_module(name: str):
    """The seeded, calibrated Brevitas module of corpus network `name`, in eval mode."""
    import torch
    from torch import nn

    spec = get_spec(name)
    torch.manual_seed(spec.seed)
    kwargs = spec.kwargs
    if spec.family == "resnet8":
        kwargs["in_channels"], kwargs["image"] = spec.input_shape[1], spec.input_shape[2]
    if spec.family == "dscnn":
        kwargs["image"] = spec.input_shape[2:]
    module = _modules()[spec.family](**kwargs)
    generator = torch.Generator().manual_seed(spec.seed + 1)
    for layer in module.modules():
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            layer.momentum = None  # cumulative statistics over the calibration
            with torch.no_grad():
                layer.weight.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
                layer.bias.copy_(torch.rand(layer.num_features, generator=generator) - 0.25)
    module.train()
    with torch.no_grad():
        for _ in range(CALIBRATION_BATCHES):
            module(torch.randn(16, *spec.input_shape[1:], generator=generator))
    return module.eval()


def export(name: str) -> Path:
    """Corpus network `name` exported with Brevitas' `export_qonnx` to one QONNX file in the tool cache (named by
    the hash of its bytes, so the same module gives the same file)."""
    import torch

    from hardwire.hls.frontend import export_module
    from hardwire.threads import one_torch_thread

    spec = get_spec(name)
    with one_torch_thread():
        module = make_module(name)
        return export_module(module, torch.zeros(*spec.input_shape))


def grid_inputs(name: str, n: int, seed: int = 0) -> np.ndarray:
    """`n` inputs on the input quantizer's grid, the all-minimum and all-maximum ones first (via the compile
    path's own `verification_inputs`, which reads the grid from the exported model)."""
    from hardwire.hls import frontend
    from hardwire.hls.compile import verification_inputs

    graph = frontend.build_graph(frontend.load_model(export(name)), name)
    return verification_inputs(graph, n, seed)
