"""As-ViT's public reference code (github VITA-Group/AsViT), loaded from a local checkout, for
the equivalence tests and the ranking benchmark: :func:`load_reference` returns its
``Transformer`` and ``CellStructure``. Nothing here is needed to use :class:`AsViT`.
"""
import os.path as osp
import sys
import types
from typing import Tuple, Type

from torch import nn

__all__ = ['load_reference', 'stub_timm']


def stub_timm() -> None:
    """The three timm 0.3.4 helpers the reference imports, when timm is not installed."""
    try:
        import timm.models.layers  # noqa: F401
        return
    except ImportError:
        pass

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (list, tuple)) else (x, x)

    class DropPath(nn.Module):
        def __init__(self, drop_prob=None):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            assert not self.drop_prob or not self.training, 'stand-in: no drop path'
            return x

    layers = types.ModuleType('timm.models.layers')
    layers.trunc_normal_ = nn.init.trunc_normal_  # the same algorithm, taken from timm
    layers.to_2tuple, layers.DropPath = to_2tuple, DropPath
    pkg, models = types.ModuleType('timm'), types.ModuleType('timm.models')
    pkg.models, models.layers = models, layers
    sys.modules.update({'timm': pkg, 'timm.models': models, 'timm.models.layers': layers})


def load_reference(repo: str) -> Tuple[Type[nn.Module], type]:
    """``(Transformer, CellStructure)`` of an As-ViT checkout at ``repo``.

    Imports the checkout's ``lib`` (it imports itself as ``models...``, so ``lib`` goes on
    ``sys.path``): run this only on a checkout you trust, as any code you import.
    ``FileNotFoundError`` names ``repo`` when it is not an As-ViT checkout.
    """
    lib = osp.join(repo, 'lib')
    if not osp.isfile(osp.join(lib, 'models', 'cell_infers', 'transformer.py')):
        raise FileNotFoundError(f'{repo} is not an As-ViT checkout (no lib/models/cell_infers/'
                                'transformer.py)')
    stub_timm()
    if lib not in sys.path:
        sys.path.insert(0, lib)
    from models.cell_infers.transformer import Transformer
    from models.cell_searchs import CellStructure
    return Transformer, CellStructure
