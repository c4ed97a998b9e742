"""Plumbing shared by the scalable backbones: presets, init, freezing, output checks."""
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

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
    tokenizer: Optional[str] = None  # dotted name of the patch-embedding conv
    token_stride: int = 1  # progressive re-tokenization factor, see set_token_stride

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

    # ------------------------------------------------------------------ re-tokenization
    def _tokenizer_conv(self) -> nn.Module:
        if self.tokenizer is None:
            raise NotImplementedError(f'{type(self).__name__} has no tokenizer conv')
        return self.get_submodule(self.tokenizer)

    def set_token_stride(self, factor: int) -> None:
        """Coarser tokens for progressive re-tokenization (As-ViT).

        The tokenizer conv gets spatial stride ``base_stride * factor`` and dilation ``factor``:
        its kernel taps every ``factor``-th pixel, so a token sees the area of the
        ``factor x factor`` tokens it replaces and the token count drops by about
        ``factor**2``. Weights and position embeddings are untouched (the latter are resampled
        to the smaller grid at forward time). ``factor=1`` restores the original conv exactly.
        The training resolution (``img_size``) must still tile; inputs are checked at forward.
        """
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f'token_stride factor must be a positive int, got {factor!r}')
        conv = self._tokenizer_conv()
        base = self.__dict__.get('_token_base')
        if base is None:  # original (stride, dilation), recorded on the first call
            base = self._token_base = (tuple(conv.stride), tuple(conv.dilation))
        if factor != 1:
            self._token_grid(self.img_size, factor, 'img_size')
        stride, dilation = base
        conv.stride = stride[:-2] + tuple(s * factor for s in stride[-2:])
        conv.dilation = dilation[:-2] + tuple(d * factor for d in dilation[-2:])
        self.token_stride = factor

    def _token_grid(self, size: Sequence[int], factor: int,
                    field: str = 'input size') -> Tuple[int, int]:
        """Token grid of a (H, W) input at ``factor``; ``ValueError`` when it does not tile.

        Non-overlapping tokenizers (kernel == stride, ViT) need H and W to be multiples of
        ``stride * factor``; overlapping ones (PiT) need at least one dilated kernel extent.
        """
        conv = self._tokenizer_conv()
        stride, dilation = self.__dict__.get('_token_base',
                                             (tuple(conv.stride), tuple(conv.dilation)))
        H, W = (int(s) for s in size[-2:])
        grid = []
        for n, s, k, d, pad in zip((H, W), stride[-2:], conv.kernel_size[-2:], dilation[-2:],
                                   conv.padding[-2:]):
            eff_stride, extent = s * factor, d * factor * (k - 1) + 1
            if k == s and n % eff_stride:
                raise ValueError(f'{field} {H}x{W} is not a multiple of the token stride '
                                 f'{eff_stride} (stride {s} x token_stride={factor})')
            if n + 2 * pad < extent:
                raise ValueError(f'{field} {H}x{W} is smaller than the dilated tokenizer '
                                 f'kernel extent {extent} at token_stride={factor}')
            grid.append((n + 2 * pad - extent) // eff_stride + 1)
        return grid[0], grid[1]
