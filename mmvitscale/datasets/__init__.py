"""Offline datasets derived from Fashion-MNIST: classification layout, detection, motion video.

See ``tools/data/`` for the command-line generators.
"""
from .det import DET_KIND, generate_det
from .fashion_mnist import CLASSES, ENV_VAR, FashionMNISTNotFoundError, load_split, source_dir
from .generators import MANIFEST, DatasetError, prepare_classification
from .video import DIRECTIONS, VIDEO_KIND, generate_video

__all__ = [
    'CLASSES', 'DET_KIND', 'DIRECTIONS', 'DatasetError', 'ENV_VAR', 'FashionMNISTNotFoundError',
    'MANIFEST', 'VIDEO_KIND', 'generate_det', 'generate_video', 'load_split',
    'prepare_classification', 'source_dir'
]
