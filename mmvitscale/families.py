"""Backbone families: the one protocol rules, search, cost and tools use instead of switching on
a family's name.

Each family lives in its model file (``models/vit.py``, ``pit.py``, ``video_vit.py``,
``asvit.py``), which defines the module and registers its :class:`Family` entry in the table of
:mod:`mmvitscale.models.family` (the protocol; re-exported here). A new
family is one new file: its module and a ``Family`` subclass passed to :func:`register_family`;
nothing else in the package has to learn its name.

What a family answers:

* ``resolve(arch, img_size, patch_size, rule)``: the validated architecture spec of a preset
  (or arch dict) under a scaling rule, at a resolution;
* ``backbone_cfg(...)``: the registry config that builds that backbone (with ``scaling``);
* ``token_grids(spec)``: the token grids its attention runs over (kernel-size checks);
* ``analytic_flops(spec, ...)``: closed-form MACs of the backbone, or ``None`` when the family
  has none (callers then count the built model with :func:`mmvitscale.cost.get_complexity`);
* ``checkpoint_target``: the converter target its checkpoints load through;
* task settings: ``kind`` (``'image'`` / ``'video'``), ``rule_keys``, ``search_grid`` (the
  default multiplier grid of the scaling search; empty when it is not searched that way),
  ``proxy_kwargs`` (backbone options for the training-free proxies) and ``default_arch``;
* the latency model (:mod:`mmvitscale.cost.predictor`, :mod:`mmvitscale.cost.kernels`), for
  families that set ``spec_type`` / ``spec_key``: ``spec_from_dict`` (a spec back from its
  ``as_dict()``, e.g. a latency-table row), ``token_stages`` and ``embed_macs`` (the analytic
  predictor's terms), ``kernels`` (the per-kernel predictor's kernel list) and ``arch_text``
  (a spec dict as one line of a report). :func:`latency_families`, :func:`spec_family` and
  :func:`spec_from_dict` find the family of a spec or of its dict.
"""
from typing import Any, Mapping, Optional, Sequence, Tuple

from .models.family import FAMILIES, Family, register_family

__all__ = ['Family', 'FAMILIES', 'get_family', 'register_family', 'family_names',
           'latency_families', 'spec_family', 'family_of_dict', 'spec_from_dict']


def _load() -> None:
    from . import models  # noqa: F401  (each model file registers its family)


def family_names(kind: Optional[str] = None, searchable: bool = False) -> Tuple[str, ...]:
    """Registered family names (of one ``kind``; with a scaling-search grid)."""
    _load()
    return tuple(n for n, f in FAMILIES.items()
                 if (kind is None or f.kind == kind) and (f.search_grid or not searchable))


def get_family(name: Any, field: str = 'family', among: Optional[Sequence[str]] = None
               ) -> Family:
    """The family called ``name``; ``ValueError`` naming ``field`` and the known names."""
    _load()
    known = tuple(among) if among is not None else tuple(FAMILIES)
    if not isinstance(name, str) or name not in known:
        raise ValueError(f'{field} must be one of {known}, got {name!r}')
    return FAMILIES[name]


def latency_families() -> Tuple[Family, ...]:
    """The families with a latency model (``spec_type`` set), in listing order."""
    _load()
    return tuple(f for f in FAMILIES.values() if f.spec_type is not None)


def spec_family(spec: Any) -> Family:
    """The latency family whose ``spec_type`` ``spec`` is; ``TypeError`` otherwise."""
    for fam in latency_families():
        if isinstance(spec, fam.spec_type):
            return fam
    names = ', '.join(f.spec_type.__name__ for f in latency_families())
    raise TypeError(f'arch must be one of {names}, got {type(spec).__name__}')


def family_of_dict(d: Mapping[str, Any]) -> Optional[Family]:
    """The latency family whose ``spec_key`` is in the arch dict ``d`` (``None``: none)."""
    for fam in latency_families():
        if fam.spec_key in d:
            return fam
    return None


def spec_from_dict(arch: Any) -> Any:
    """A latency family's spec, or its ``as_dict()`` (a latency-table row's ``arch``) as one.

    ``ValueError`` names the dict and what it lacks; ``TypeError`` for anything else.
    """
    if not isinstance(arch, Mapping):
        try:
            spec_family(arch)
        except TypeError as err:
            raise TypeError(f'{err} (or the dict of one)') from None
        return arch
    fam = family_of_dict(arch)
    if fam is None:
        keys = ', '.join(f'{f.spec_key!r} ({f.name})' for f in latency_families())
        raise ValueError(f'arch dict {dict(arch)} is no family\'s spec: it needs one of {keys}')
    try:
        return fam.spec_from_dict(arch)
    except KeyError as err:
        raise ValueError(f'arch dict {dict(arch)} lacks {err.args[0]!r}') from None
