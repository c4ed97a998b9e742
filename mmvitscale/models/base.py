"""Plumbing shared by the scalable backbones: presets, argument and input checks, init,
freezing."""
import numbers
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from .layers import init_vit_weights

OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap')
INTERPOLATE_MODES = ('bilinear', 'bicubic')  # position-embedding resampling (align_corners off)


def check_positive_int(value: Any, name: str) -> int:
    """``value`` if it is an int >= 1 (not a bool), else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return value


def check_rate(value: Any, name: str) -> float:
    """A probability in ``[0, 1)`` (dropout, drop path), else a ``ValueError`` naming ``name``."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0.0 <= float(value) < 1.0):
        raise ValueError(f'{name} must be a number in [0, 1), got {value!r}')
    return float(value)


def check_frozen_stages(value: Any, num: int, unit: str = 'blocks') -> int:
    """``-1`` (nothing frozen) .. ``num`` (everything), else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= num:
        raise ValueError(f'frozen_stages must be an int from -1 (none) to {num} (all {num} '
                         f'{unit}), got {value!r}')
    return value


def check_common_args(in_channels: Any = 3, drop_rate: Any = 0.0, attn_drop_rate: Any = 0.0,
                      drop_path_rate: Any = 0.0, norm_eps: Any = 1e-6,
                      interpolate_mode: Any = 'bicubic', **flags: Any) -> None:
    """Check the constructor options every backbone family shares, naming the bad one;
    ``flags`` (``qkv_bias=...``, ``final_norm=...``) must be bools."""
    check_positive_int(in_channels, 'in_channels')
    for name, value in (('drop_rate', drop_rate), ('attn_drop_rate', attn_drop_rate),
                        ('drop_path_rate', drop_path_rate)):
        check_rate(value, name)
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f'{name} must be a bool, got {value!r}')
    if (isinstance(norm_eps, bool) or not isinstance(norm_eps, numbers.Real)
            or not float(norm_eps) > 0):
        raise ValueError(f'norm_eps must be a positive number, got {norm_eps!r}')
    if interpolate_mode not in INTERPOLATE_MODES:
        raise ValueError(f'interpolate_mode must be one of {INTERPOLATE_MODES}, '
                         f'got {interpolate_mode!r}')


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

    # ------------------------------------------------------------------ input checks
    input_dims = 'N, C, H, W'  # the layout named in input errors

    def check_input(self, x: Any) -> Tuple[int, int]:
        """The token grid of input ``x``; ``TypeError`` / ``ValueError`` naming the expected and
        the given shape when ``x`` is not a float tensor the tokenizer tiles exactly.

        Checked before the first op: the number of dims (a batch dim is required), the channel
        count, empty sizes, and the spatial size (see :meth:`_token_grid`).
        """
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f'{name} expects a torch.Tensor of shape ({self.input_dims}), '
                            f'got {type(x).__name__}')
        shape = tuple(x.shape)
        ndim = len(self.input_dims.split(','))
        channels = self._tokenizer_conv().in_channels
        expected = f'({self.input_dims}) with C={channels}'
        if x.ndim != ndim:
            hint = ' (a dim is missing: is it the batch dim?)' if x.ndim == ndim - 1 else ''
            raise ValueError(f'{name} expects a {ndim}-D input {expected}, got shape '
                             f'{shape}{hint}')
        if not x.is_floating_point():
            raise TypeError(f'{name} expects a floating-point input, got {x.dtype} of shape '
                            f'{shape}')
        weights = self._tokenizer_conv().weight.dtype
        if x.dtype != weights and not torch.is_autocast_enabled(x.device.type):
            # e.g. a float16 input to a float32 model: torch fails inside the first matmul
            raise TypeError(f'{name} has {weights} weights but got a {x.dtype} input of shape '
                            f'{shape}: cast the input (x.to({weights})) or the model '
                            f'(model.to({x.dtype})); float16, bfloat16 and float32 models '
                            'all run on CPU')
        if shape[1] != channels:
            raise ValueError(f'{name} expects input {expected} (in_channels={channels}), got '
                             f'shape {shape}')
        if any(s < 1 for s in shape[2:]):
            raise ValueError(f'{name} expects a non-empty input {expected}, got shape {shape}')
        try:
            return self._token_grid(shape, self.token_stride)
        except ValueError as err:
            raise ValueError(f'{name} expects input {expected}, got shape {shape}: '
                             f'{err}') from None

    def run_blocks(self, x: Tensor, block_arg: Any, grid: Any
                   ) -> Union[Tuple[Tensor, ...], Tensor]:
        """Tokens through ``self.blocks`` (each called with ``block_arg``), the final ``norm``
        after the last, each block of ``out_indices`` formatted by ``self._format(x, grid)``:
        the outputs of a single-stage backbone (a tuple unless ``return_tuple`` is off)."""
        outs = []
        last = self.num_layers - 1
        for i, block in enumerate(self.blocks):
            x = block(x, block_arg)
            if i == last:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(self._format(x, grid))
        return tuple(outs) if self.return_tuple else outs[-1]

    def _token_grid(self, size: Sequence[int], factor: int,
                    field: str = 'input size') -> Tuple[int, int]:
        """Token grid of a (H, W) input at ``factor``; ``ValueError`` when it does not tile.

        Non-overlapping tokenizers (kernel == stride, ViT) need H and W to be multiples of
        ``stride * factor``; overlapping ones (PiT) need at least one dilated kernel extent and,
        at ``factor=1``, a size the stride tiles exactly (``H = kernel + stride * n``, so no
        border pixels are dropped, as ViT drops none).
        """
        conv = self._tokenizer_conv()
        stride, dilation = self.__dict__.get('_token_base',
                                             (tuple(conv.stride), tuple(conv.dilation)))
        H, W = (int(s) for s in size[-2:])
        grid = []
        for n, s, k, d, pad in zip((H, W), stride[-2:], conv.kernel_size[-2:], dilation[-2:],
                                   conv.padding[-2:]):
            eff_stride, extent = s * factor, d * factor * (k - 1) + 1
            if k == s and factor == 1 and n % s:
                raise ValueError(f'{field} {H}x{W} is not a multiple of patch_size={s}')
            if k == s and n % eff_stride:
                raise ValueError(f'{field} {H}x{W} is not a multiple of the token stride '
                                 f'{eff_stride} (stride {s} x token_stride={factor})')
            if n + 2 * pad < extent:
                raise ValueError(f'{field} {H}x{W} is smaller than the dilated tokenizer '
                                 f'kernel extent {extent} at token_stride={factor}')
            if k != s and factor == 1 and (n + 2 * pad - extent) % s:
                raise ValueError(f'{field} {H}x{W} does not tile the tokenizer (kernel {k}, '
                                 f'stride {s}, padding {pad}): {n} - {extent - 2 * pad} is not '
                                 f'a multiple of {s}, {(n + 2 * pad - extent) % s} border '
                                 'pixels would be dropped')
            grid.append((n + 2 * pad - extent) // eff_stride + 1)
        return grid[0], grid[1]
