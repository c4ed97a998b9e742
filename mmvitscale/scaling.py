"""Scaling rules: plain data in, a validated architecture out.

A *rule* is a dict applied to a preset. Each knob takes either an absolute target or a
multiplier (the same knob with a ``_mult`` suffix), never both:

=================  ===========================  ============================================
knob               absolute key                 multiplier key
=================  ===========================  ============================================
depth              ``depth`` (blocks)           ``depth_mult``
width              ``width`` (embed dims)       ``width_mult``
heads              ``heads``                    ``heads_mult``
MLP ratio          ``mlp_ratio``                ``mlp_ratio_mult``
input resolution   ``resolution``               ``resolution_mult``
patch size         ``patch_size``               ``patch_size_mult``
=================  ===========================  ============================================

Rounding (multipliers only; absolute values are used as given and validated):

* depth, heads, patch size: ``round(base * m)``; a result below 1 is an error.
* width: ``base * m`` rounded to the nearest multiple of ``lcm(heads, 8)`` so every head has
  the same size and the width stays a multiple of 8; a result of 0 is an error. The same
  rounding (with ``m = 1``) applies when only the head count changes.
* MLP ratio: ``base * m`` (float); the hidden size is ``round(width * ratio)``.
* resolution: ``base * m`` rounded to the nearest multiple of the (scaled) patch size.

Absolute widths must be divisible by the head count; absolute resolutions by the patch size
(ViTs here do not pad). Violations raise ``ValueError`` naming the field and value.
"""
import math
from dataclasses import asdict, dataclass
from typing import Any, Collection, Dict, Mapping, Optional, Sequence, Tuple, Union

KNOBS = ('depth', 'width', 'heads', 'mlp_ratio', 'resolution', 'patch_size')
RULE_KEYS = frozenset(KNOBS) | frozenset(k + '_mult' for k in KNOBS)

Size = Union[int, Tuple[int, int]]


@dataclass(frozen=True)
class ViTArch:
    """A fully resolved plain-ViT architecture."""

    embed_dims: int
    num_layers: int
    num_heads: int
    mlp_ratio: float
    img_size: Tuple[int, int]
    patch_size: int

    @property
    def head_dims(self) -> int:
        return self.embed_dims // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.embed_dims * self.mlp_ratio))

    @property
    def grid(self) -> Tuple[int, int]:
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def to_2tuple(size: Size, field: str = 'img_size') -> Tuple[int, int]:
    """``(size, size)`` or ``tuple(size)``; ``ValueError`` naming ``field`` unless the size is
    a positive int or a pair of positive ints."""
    pair = (size, size) if _is_int(size) else size
    if (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_int(s) for s in pair)
            and min(pair) >= 1):
        return (int(pair[0]), int(pair[1]))
    raise ValueError(f'{field} must be a positive int or a pair of positive ints, got {size!r}')


def _positive_number(rule: Mapping, key: str) -> float:
    value = rule[key]
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
            or not math.isfinite(value)):
        raise ValueError(f'scaling.{key} must be a positive number, got {value!r}')
    return float(value)


def pick_knob(rule: Mapping, knob: str) -> Tuple[Optional[float], Optional[float]]:
    """Return (absolute, multiplier) for a knob; at most one is not None."""
    absolute = _positive_number(rule, knob) if knob in rule else None
    mult = _positive_number(rule, knob + '_mult') if knob + '_mult' in rule else None
    if absolute is not None and mult is not None:
        raise ValueError(f'scaling gives both {knob}={rule[knob]!r} and '
                         f'{knob}_mult={rule[knob + "_mult"]!r}; use one of them')
    return absolute, mult


def scaled_int(rule: Mapping, knob: str, base: int) -> int:
    """An integer knob of ``rule`` applied to ``base``: its absolute value, or ``base`` times
    its multiplier, rounded."""
    absolute, mult = pick_knob(rule, knob)
    if absolute is not None:
        if absolute != int(absolute):
            raise ValueError(f'scaling.{knob} must be an integer, got {rule[knob]!r}')
        return int(absolute)
    if mult is None:
        return base
    value = int(round(base * mult))
    if value < 1:
        raise ValueError(f'scaling.{knob}_mult={rule[knob + "_mult"]!r} turns {knob} {base} '
                         f'into {value}; it must stay >= 1')
    return value


def check_rule(rule: Optional[Mapping], known_keys: Collection[str],
               list_knobs: Collection[str] = ()) -> Dict[str, Any]:
    """Check a rule's keys and value types; returns a plain dict copy.

    Every value must be a positive number, except that the knobs in ``list_knobs`` may also be
    given per stage as a list (checked further when the rule is applied).
    """
    if rule is None:
        return {}
    if not isinstance(rule, Mapping):
        raise ValueError(f'scaling must be a dict, got {type(rule).__name__}: {rule!r}')
    unknown = sorted(set(rule) - set(known_keys))
    if unknown:
        raise ValueError(f'unknown scaling key {unknown[0]!r} (value {rule[unknown[0]]!r}); '
                         f'known keys: {sorted(known_keys)}')
    for key, value in rule.items():
        if not (key in list_knobs and isinstance(value, (list, tuple))):
            _positive_number(rule, key)
    return dict(rule)


def validate_rule(rule: Optional[Mapping]) -> Dict[str, float]:
    """Check a plain-ViT scaling rule (see the module docstring)."""
    return check_rule(rule, RULE_KEYS)


def scaled_width(rule: Mapping, base: int, heads: int, heads_changed: bool) -> int:
    """The ``width`` knob: absolute as given, else ``base * width_mult`` rounded to a multiple of
    ``lcm(heads, 8)`` (also when only the head count changed)."""
    width_abs, width_mult = pick_knob(rule, 'width')
    if width_abs is not None:
        if width_abs != int(width_abs):
            raise ValueError(f'scaling.width must be an integer, got {rule["width"]!r}')
        return int(width_abs)
    if width_mult is None and not heads_changed:
        return base
    step = heads * 8 // math.gcd(heads, 8)
    width = int(round(base * (width_mult or 1.0) / step)) * step
    if width < 1:
        raise ValueError(f'scaling.width_mult={width_mult!r} turns width {base} into 0 '
                         f'(width is rounded to a multiple of lcm(heads, 8)={step})')
    return width


def scaled_resolution(rule: Mapping, base: Tuple[int, int], step: int) -> Tuple[int, int]:
    """The ``resolution`` knob: absolute as given, else ``base * resolution_mult`` rounded to a
    multiple of ``step`` (the patch, the patch stride, or 32 for AsViT)."""
    res_abs, res_mult = pick_knob(rule, 'resolution')
    if res_abs is not None:
        if res_abs != int(res_abs):
            raise ValueError(f'scaling.resolution must be an integer, got {rule["resolution"]!r}')
        return (int(res_abs), int(res_abs))
    if res_mult is not None:
        return tuple(max(1, int(round(s * res_mult / step))) * step for s in base)
    return base


def scale_vit(base: ViTArch, rule: Optional[Mapping] = None) -> ViTArch:
    """Apply a scaling rule (see module docstring) to a base architecture."""
    rule = validate_rule(rule)
    depth = scaled_int(rule, 'depth', base.num_layers)
    heads = scaled_int(rule, 'heads', base.num_heads)
    patch = scaled_int(rule, 'patch_size', base.patch_size)

    width = scaled_width(rule, base.embed_dims, heads,
                         'heads' in rule or 'heads_mult' in rule)

    ratio_abs, ratio_mult = pick_knob(rule, 'mlp_ratio')
    mlp_ratio = ratio_abs if ratio_abs is not None else base.mlp_ratio * (ratio_mult or 1.0)

    img_size = scaled_resolution(rule, base.img_size, patch)
    return make_vit_arch(width, depth, heads, mlp_ratio, img_size, patch, source='scaling')


# Names of the knobs in errors: the scaling rule's keys, or the arguments a user typed.
VIT_ARG_NAMES = dict(width='embed_dims', depth='num_layers', heads='num_heads',
                     mlp_ratio='mlp_ratio', resolution='img_size', patch_size='patch_size')
PIT_ARG_NAMES = dict(width='base_dims', depth='depths', heads='heads', mlp_ratio='mlp_ratio',
                     resolution='img_size', patch_size='patch_size', patch_stride='patch_stride')


def _check_mlp_ratio(value: Any, name: str, prefix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f'{prefix}{name} must be a positive number, got {value!r}')


def make_vit_arch(embed_dims: int, num_layers: int, num_heads: int, mlp_ratio: float,
                  img_size: Size, patch_size: int, source: str = 'arch') -> ViTArch:
    """Build a :class:`ViTArch`, raising ``ValueError`` naming the first infeasible field.

    ``source='arch'`` (the constructor's arguments) names fields as the user typed them
    (``embed_dims``, ``num_heads``, ``img_size``, ...); ``source='scaling'`` names the rule's
    knobs (``scaling: width=...``).
    """
    arch = source == 'arch'
    n = VIT_ARG_NAMES if arch else {k: k for k in VIT_ARG_NAMES}
    prefix = '' if arch else f'{source}: '
    img_size = to_2tuple(img_size, n['resolution'])
    for knob, value in (('depth', num_layers), ('heads', num_heads), ('width', embed_dims),
                        ('patch_size', patch_size)):
        if not _is_int(value) or value < 1:
            raise ValueError(f'{prefix}{n[knob]} must be a positive integer, got {value!r}')
    _check_mlp_ratio(mlp_ratio, n['mlp_ratio'], prefix)
    if embed_dims % num_heads:
        raise ValueError(f'{prefix}{n["width"]}={embed_dims} is not divisible by '
                         f'{n["heads"]}={num_heads}')
    for s in img_size:
        if s < patch_size or s % patch_size:
            raise ValueError(f'{prefix}{n["resolution"]}={s} is not a multiple of '
                             f'{n["patch_size"]}={patch_size} (no padding is applied)')
    return ViTArch(embed_dims, num_layers, num_heads, float(mlp_ratio), img_size, patch_size)


# ----------------------------------------------------------------------------- PiT
PIT_KNOBS = KNOBS + ('patch_stride', )
PIT_RULE_KEYS = frozenset(PIT_KNOBS) | frozenset(k + '_mult' for k in PIT_KNOBS)


@dataclass(frozen=True)
class PiTArch:
    """A fully resolved pooling-based ViT: per-stage head dims, depths and head counts."""

    base_dims: Tuple[int, ...]
    depths: Tuple[int, ...]
    heads: Tuple[int, ...]
    mlp_ratio: float
    img_size: Tuple[int, int]
    patch_size: int
    patch_stride: int

    @property
    def embed_dims(self) -> Tuple[int, ...]:
        return tuple(b * h for b, h in zip(self.base_dims, self.heads))

    @property
    def grids(self) -> Tuple[Tuple[int, int], ...]:
        """Token grid of each stage (stride-2 pooling between stages, kernel 3, padding 1)."""
        h, w = (int((s - self.patch_size) // self.patch_stride + 1) for s in self.img_size)
        grids = [(h, w)]
        for _ in self.depths[1:]:
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            grids.append((h, w))
        return tuple(grids)

    def mlp_hidden(self, stage: int) -> int:
        return int(round(self.embed_dims[stage] * self.mlp_ratio))

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def per_stage(rule: Mapping, knob: str, base: Tuple[int, ...]) -> Tuple[int, ...]:
    """A per-stage integer knob: absolute int / list, or a multiplier applied to each stage."""
    if knob in rule and isinstance(rule[knob], (list, tuple)):
        values = rule[knob]
        if len(values) != len(base) or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f'scaling.{knob} must be {len(base)} positive integers (one per '
                             f'stage), got {values!r}')
        if knob + '_mult' in rule:
            raise ValueError(f'scaling gives both {knob}={values!r} and '
                             f'{knob}_mult={rule[knob + "_mult"]!r}; use one of them')
        return tuple(values)
    return tuple(scaled_int(rule, knob, b) for b in base)


PIT_LIST_KNOBS = ('depth', 'heads', 'width')


def _scaled_depths(rule: Mapping, base: Tuple[int, ...]) -> Tuple[int, ...]:
    """Per-stage depths under a rule: a list or int as given; ``depth_mult`` scales the total.

    The total ``round(sum(base) * depth_mult)`` is spread over the stages in proportion to
    their base depths (largest remainder; ties go to the deeper, then the later stage), so a
    multiplier deepens the network as on ViT even where rounding each stage alone would not
    (``[1, 2, 1] * 1.25`` is ``[1, 3, 1]``, not ``[1, 2, 1]``).
    """
    if 'depth_mult' not in rule:
        return per_stage(rule, 'depth', base)
    mult = rule['depth_mult']
    total = int(round(sum(base) * mult))
    shares = [b * total / sum(base) for b in base]
    depths = [int(x) for x in shares]
    order = sorted(range(len(base)), key=lambda i: (-(shares[i] - depths[i]), -base[i], -i))
    for i in order[:total - sum(depths)]:
        depths[i] += 1
    for b, d in zip(base, depths):
        if d < 1:
            raise ValueError(f'scaling.depth_mult={mult!r} turns depth {b} into 0; it must '
                             f'stay >= 1 (depths {list(base)} -> {depths})')
    return tuple(depths)


def _scaled_stride(rule: Mapping, base: 'PiTArch') -> int:
    """The patch stride: its own knob when the rule gives one, else the patch's multiplier.

    ``patch_size_mult`` alone scales the stride by the same factor, so patches stay as
    overlapping as the base's and the token grid shrinks as on ViT.
    """
    if 'patch_stride' in rule or 'patch_stride_mult' in rule:
        return scaled_int(rule, 'patch_stride', base.patch_stride)
    if 'patch_size_mult' in rule:
        mult = rule['patch_size_mult']
        stride = int(round(base.patch_stride * mult))
        if stride < 1:
            raise ValueError(f'scaling.patch_size_mult={mult!r} turns patch_stride '
                             f'{base.patch_stride} into {stride}; it must stay >= 1')
        return stride
    return base.patch_stride


def validate_pit_rule(rule: Optional[Mapping]) -> Dict[str, Any]:
    """Check a PiT scaling rule (``depth``, ``heads``, ``width`` may be per-stage lists)."""
    return check_rule(rule, PIT_RULE_KEYS, PIT_LIST_KNOBS)


def scale_pit(base: PiTArch, rule: Optional[Mapping] = None) -> PiTArch:
    """Apply a scaling rule to a PiT preset.

    Same keys as :func:`scale_vit` plus ``patch_stride``; ``depth``, ``heads`` and ``width``
    (the per-head dims, PiT's ``base_dims``) also take one value per stage. ``heads_mult`` and
    ``width_mult`` apply to every stage and round to the nearest integer (>= 1); stage width
    is ``base_dim * heads``, so it is always divisible by the head count. ``depth_mult``
    scales the total depth and spreads it over the stages (:func:`_scaled_depths`);
    ``patch_size_mult`` without a stride knob scales the stride too (:func:`_scaled_stride`).
    A resolution multiplier rounds to a multiple of the patch stride.
    """
    rule = validate_pit_rule(rule)
    depths = _scaled_depths(rule, base.depths)
    heads = per_stage(rule, 'heads', base.heads)
    base_dims = per_stage(rule, 'width', base.base_dims)
    patch = scaled_int(rule, 'patch_size', base.patch_size)
    stride = _scaled_stride(rule, base)
    ratio_abs, ratio_mult = pick_knob(rule, 'mlp_ratio')
    mlp_ratio = ratio_abs if ratio_abs is not None else base.mlp_ratio * (ratio_mult or 1.0)
    img_size = scaled_resolution(rule, base.img_size, stride)
    return make_pit_arch(base_dims, depths, heads, mlp_ratio, img_size, patch, stride,
                         source='scaling')


def make_pit_arch(base_dims: Sequence[int], depths: Sequence[int], heads: Sequence[int],
                  mlp_ratio: float, img_size: Size, patch_size: int, patch_stride: int,
                  source: str = 'arch') -> PiTArch:
    """Build a :class:`PiTArch`, raising ``ValueError`` naming the first infeasible field
    (with ``source='arch'`` as the user typed it, see :func:`make_vit_arch`).

    The patch conv must tile the resolution exactly (``resolution = patch_size +
    patch_stride * n``): as ViT, PiT drops no border pixels.
    """
    arch = source == 'arch'
    n = PIT_ARG_NAMES if arch else {k: k for k in PIT_ARG_NAMES}
    prefix = '' if arch else f'{source}: '
    img_size = to_2tuple(img_size, n['resolution'])
    for knob, values in (('width', base_dims), ('depth', depths), ('heads', heads)):
        if not isinstance(values, (list, tuple)):
            raise ValueError(f'{prefix}{n[knob]} must be a list of positive integers (one per '
                             f'stage), got {values!r}')
    base_dims, depths, heads = tuple(base_dims), tuple(depths), tuple(heads)
    if not len(base_dims) == len(depths) == len(heads) or not depths:
        raise ValueError(f'{prefix}{n["width"]}, {n["depth"]} and {n["heads"]} need one entry '
                         f'per stage, got {base_dims}, {depths}, {heads}')
    for knob, values in (('width', base_dims), ('depth', depths), ('heads', heads)):
        for v in values:
            if not _is_int(v) or v < 1:
                raise ValueError(f'{prefix}{n[knob]} must be positive integers, got {values}')
    for knob, value in (('patch_size', patch_size), ('patch_stride', patch_stride)):
        if not _is_int(value) or value < 1:
            raise ValueError(f'{prefix}{n[knob]} must be a positive integer, got {value!r}')
    _check_mlp_ratio(mlp_ratio, n['mlp_ratio'], prefix)
    for s in img_size:
        if s < patch_size:
            raise ValueError(f'{prefix}{n["resolution"]}={s} is smaller than '
                             f'{n["patch_size"]}={patch_size}')
        if (s - patch_size) % patch_stride:
            raise ValueError(f'{prefix}{n["resolution"]}={s} does not tile: {s} - '
                             f'{n["patch_size"]} {patch_size} is not a multiple of '
                             f'{n["patch_stride"]}={patch_stride} (border pixels would be '
                             'dropped)')
    return PiTArch(base_dims, depths, heads, float(mlp_ratio), img_size, patch_size,
                   patch_stride)
