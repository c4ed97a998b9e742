"""mmvitscale registries, children of mmengine's roots (scope ``mmvitscale``).

``locations`` makes lookups import the implementing modules lazily, so a host config (mmdet,
mmpretrain, mmaction2 default scope) can say ``type='mmvitscale.ScaledViT'`` without
``custom_imports``: mmengine imports ``mmvitscale.registry`` when it meets the scope prefix.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, locations=['mmvitscale.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['mmvitscale.engine'])
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, locations=['mmvitscale.engine'])
# host datasets that name the file they fail on (mmvitscale.CocoDataset, ...VideoDataset);
# mmvitscale.InMemoryFashionMNIST (items computed once, kept as tensors)
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS,
                    locations=['mmvitscale.datasets.hosts', 'mmvitscale.datasets.memory'])

__all__ = ['MODELS', 'HOOKS', 'RUNNERS', 'DATASETS']
