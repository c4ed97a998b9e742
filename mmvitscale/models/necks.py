"""Necks that adapt single-scale ViT features to multi-scale detection heads."""
from typing import List, Sequence, Tuple

from mmengine.model import BaseModule
from torch import Tensor, nn
import torch.nn.functional as F

from ..registry import MODELS


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of an NCHW map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SimpleFeaturePyramid(BaseModule):
    """ViTDet's simple feature pyramid: one stride-s map -> several strides.

    Each ``scale_factor`` builds one level from the backbone's last map: 4 and 2 use
    transposed convolutions, 1 is the identity, 0.5 a 2x2 max-pool. Each level then gets a 1x1
    and a 3x3 convolution (LayerNorm after each) to ``out_channels``. Levels beyond
    ``len(scale_factors)`` up to ``num_outs`` are stride-2 max-pools of the last one (P6, P7).

    Args:
        in_channels: channels of the backbone map.
        out_channels: channels of every output level.
        scale_factors: resize factor of each level, relative to the backbone map.
        num_outs: number of output levels (>= len(scale_factors)).
    """

    _VALID = (4.0, 2.0, 1.0, 0.5)

    def __init__(self, in_channels: int, out_channels: int,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int = None, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        for s in scale_factors:
            if float(s) not in self._VALID:
                raise ValueError(f'scale_factors entry {s!r} is not one of {self._VALID}')
        num_outs = len(scale_factors) if num_outs is None else num_outs
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs={num_outs} is smaller than '
                             f'len(scale_factors)={len(scale_factors)}')
        self.num_outs = num_outs
        self.stages = nn.ModuleList()
        for s in scale_factors:
            dim = in_channels
            layers: List[nn.Module] = []
            if s == 4.0:
                layers += [nn.ConvTranspose2d(dim, dim // 2, 2, 2), LayerNorm2d(dim // 2),
                           nn.GELU(), nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2)]
                dim //= 4
            elif s == 2.0:
                layers += [nn.ConvTranspose2d(dim, dim // 2, 2, 2)]
                dim //= 2
            elif s == 0.5:
                layers += [nn.MaxPool2d(2, 2)]
            layers += [nn.Conv2d(dim, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                       nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                       LayerNorm2d(out_channels)]
            self.stages.append(nn.Sequential(*layers))

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        x = inputs[-1] if isinstance(inputs, (tuple, list)) else inputs
        if x.dim() != 4:
            raise ValueError('SimpleFeaturePyramid needs an NCHW map: use the backbone with '
                             f"out_type='featmap' (got a tensor of shape {tuple(x.shape)})")
        outs = [stage(x) for stage in self.stages]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)


MODELS.register_module(module=SimpleFeaturePyramid)
