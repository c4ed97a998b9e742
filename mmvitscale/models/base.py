"""Plumbing shared by the scalable backbones: presets, init, freezing, output checks."""
from typing import Dict, Iterable, Mapping, Sequence, Union

from mmengine.model import BaseModule
from torch import nn

from .layers import init_vit_weights

OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap')


class ScalableBackbone(BaseModule):
    """Base of ScaledViT / ScaledPiT / ScaledVideoViT.

    Subclasses set ``arch_zoo`` (preset name -> arch dict), ``arch_keys`` (required and
    optional keys of an arch dict) and ``init_std_params`` (names of parameters initialised by a
    truncated normal), and implement ``frozen_modules()`` when they support freezing.
    """

    arch_zoo: Dict[str, dict] = {}
    arch_keys: Sequence[Sequence[str]] = ((), ())  # (required, optional)
    init_std_params: Sequence[str] = ('pos_embed', 'cls_token')

    @classmethod
    def select_arch(cls, arch: Union[str, Mapping]) -> Mapping:
        """A preset's arch dict, or a user dict checked for missing and unknown keys."""
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_zoo:
                raise ValueError(f'arch {arch!r} is not a known preset; choose from '
                                 f'{sorted(set(cls.arch_zoo))} or pass a dict')
            return cls.arch_zoo[arch.lower()]
        if not isinstance(arch, Mapping):
            raise ValueError(f'arch must be a preset name or a dict, got {arch!r}')
        required, optional = cls.arch_keys
        missing = sorted(set(required) - set(arch))
        if missing:
            raise ValueError(f'arch dict is missing key {missing[0]!r}; it needs '
                             f'{sorted(required)} and optionally {sorted(optional)}')
        unknown = sorted(set(arch) - set(required) - set(optional))
        if unknown:
            raise ValueError(f'arch dict has unknown key {unknown[0]!r} '
                             f'(value {arch[unknown[0]]!r})')
        return arch

    @staticmethod
    def check_out_type(out_type: str) -> str:
        if out_type not in OUT_TYPES:
            raise ValueError(f'out_type must be one of {OUT_TYPES}, got {out_type!r}')
        return out_type

    def _pretrained_init(self) -> bool:
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg or {}]
        return any(c.get('type') == 'Pretrained' for c in cfgs)

    def reset_parameters(self) -> None:
        """DeiT-style init: truncated normal (std .02) embeddings and linears, unit norms."""
        for name in self.init_std_params:
            param = getattr(self, name, None)
            if param is not None:
                nn.init.trunc_normal_(param, std=0.02)
        self.apply(init_vit_weights)

    def init_weights(self) -> None:
        """:meth:`reset_parameters`, unless ``init_cfg`` loads a pretrained checkpoint."""
        if not self._pretrained_init():
            self.reset_parameters()
        super().init_weights()

    def frozen_modules(self) -> Iterable[nn.Module]:
        """Modules (and, through ``frozen_params``, parameters) to keep frozen."""
        return ()

    def frozen_params(self) -> Iterable[nn.Parameter]:
        return ()

    def _freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad = False
        for p in self.frozen_params():
            p.requires_grad = False

    def train(self, mode: bool = True) -> 'ScalableBackbone':
        super().train(mode)
        self._freeze_stages()
        return self
