"""The :class:`Family` protocol of a backbone family and the table its entries register in.

Each model file (``vit.py``, ``pit.py``, ``video_vit.py``, ``asvit.py``) subclasses
:class:`Family` next to its module and passes an instance to :func:`register_family`. The
lookups that rules, search, cost and tools use (``get_family``, ``spec_family``, ...) live in
:mod:`mmvitscale.families`, which imports the model files first; this module imports none of
them, so the model files can import it.
"""
from typing import Any, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Tuple, Type

__all__ = ['Family', 'FAMILIES', 'register_family']

FAMILIES: Dict[str, 'Family'] = {}


class Family:
    """Protocol of a backbone family (subclass it next to the module; see module docstring)."""

    name: ClassVar[str] = ''
    order: ClassVar[int] = 100  # position in listings and error messages
    kind: ClassVar[str] = 'image'
    backbone_type: ClassVar[str] = ''
    checkpoint_target: ClassVar[Optional[str]] = None
    rule_keys: ClassVar[FrozenSet[str]] = frozenset()
    default_arch: ClassVar[str] = ''
    patch_size_arg: ClassVar[bool] = False  # patch size is a constructor argument (not in arch)
    search_grid: ClassVar[Mapping[str, Tuple[float, ...]]] = {}
    proxy_kwargs: ClassVar[Mapping[str, Any]] = {}

    @property
    def backbone_cls(self) -> Type:
        """The backbone class (looked up in mmvitscale's registry)."""
        from ..registry import MODELS
        return MODELS.get(self.backbone_type.split('.', 1)[-1])

    def resolve(self, arch: Any, img_size: Any = 224, patch_size: Optional[int] = None,
                rule: Optional[Mapping[str, Any]] = None, **geometry: Any) -> Any:
        """Architecture spec of ``arch`` under ``rule`` (``attn_type`` is not a shape knob)."""
        raise NotImplementedError

    def backbone_cfg(self, arch: Any, img_size: Any = 224, patch_size: Optional[int] = None,
                     rule: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Dict[str, Any]:
        """Registry config of the backbone under ``rule`` (``kwargs`` pass through)."""
        cfg: Dict[str, Any] = dict(type=self.backbone_type, arch=arch, img_size=img_size,
                                   scaling=dict(rule or {}))
        if self.patch_size_arg:
            cfg['patch_size'] = patch_size or 16
        elif patch_size is not None:
            raise ValueError(f'patch_size belongs in the {self.name} arch dict, got '
                             f'patch_size={patch_size!r}')
        cfg.update(kwargs)
        return cfg

    def token_grids(self, spec: Any) -> List[Tuple[int, int]]:
        """Token grids (h, w) the attention of ``spec`` runs over."""
        return [tuple(spec.grid)]

    def input_size(self, spec: Any) -> Tuple[int, int]:
        """Input (H, W) of ``spec``."""
        return tuple(spec.img_size)

    def analytic_flops(self, spec: Any, in_channels: int = 3, attn_type: str = 'softmax',
                       linear_kernel_size: int = 9) -> Optional[int]:
        """Closed-form backbone MACs (no head), or ``None`` when the family has none."""
        return None

    # ------------------------------------------------------------ latency model (optional)
    spec_type: ClassVar[Optional[type]] = None  # the resolved spec class; None: no latency model
    spec_key: ClassVar[str] = ''  # an ``as_dict()`` key that only this family's specs have

    def spec_from_dict(self, d: Mapping[str, Any]) -> Any:
        """The spec whose ``as_dict()`` is ``d``; ``KeyError`` names a missing key."""
        raise NotImplementedError(f'family {self.name!r} has no latency model')

    def token_stages(self, spec: Any) -> List[Tuple[int, int, int, int, int]]:
        """(tokens with the class token, width, MLP hidden, heads, depth) of each stage."""
        raise NotImplementedError(f'family {self.name!r} has no latency model')

    def embed_macs(self, spec: Any, in_channels: int = 3) -> int:
        """MACs of one image outside the Transformer blocks (patch embedding, pooling)."""
        raise NotImplementedError(f'family {self.name!r} has no latency model')

    def kernels(self, spec: Any, in_channels: int = 3, batch_size: int = 1) -> List[Any]:
        """The :class:`~mmvitscale.cost.kernels.Kernel` list of one forward pass (no head)."""
        raise NotImplementedError(f'family {self.name!r} has no latency model')

    def arch_text(self, d: Mapping[str, Any], compact: bool = False) -> str:
        """A spec dict as one line (``compact``: a short label for plots and matrices)."""
        raise NotImplementedError(f'family {self.name!r} has no latency model')

    def __repr__(self) -> str:
        return f'<Family {self.name}: {self.backbone_type}>'


def register_family(family: Family) -> Family:
    """Add a family instance to :data:`FAMILIES` (its ``name`` must be new)."""
    if not family.name or family.name in FAMILIES:
        raise KeyError(f'family name {family.name!r} is empty or already registered')
    FAMILIES[family.name] = family
    ordered = sorted(FAMILIES.items(), key=lambda item: item[1].order)
    FAMILIES.clear()
    FAMILIES.update(ordered)
    return family
