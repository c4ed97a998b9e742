"""Checkpoint formats: named converters (timm / DeiT, mmpretrain, timm PiT, naver-ai PiT),
loading with depth / resolution adaptation, and reading files without running code from them
(:func:`safe_torch_load`). Models stay format-agnostic: they only register
:func:`register_checkpoint_hook`."""
from .converters import (CONVERTERS, Converter, convert_state_dict, detect_format,
                         register_converter, unwrap_checkpoint)
from .loading import (LoadResult, adapt_state_dict, fit_state_dict, load_pretrained,
                      register_checkpoint_hook)
from .safe_load import (CheckpointError, CheckpointReadError, CheckpointRefusedError,
                        CheckpointTooLargeError, safe_torch_load)

__all__ = ['CONVERTERS', 'Converter', 'convert_state_dict', 'detect_format', 'register_converter',
           'unwrap_checkpoint', 'LoadResult', 'adapt_state_dict', 'fit_state_dict',
           'load_pretrained', 'register_checkpoint_hook', 'CheckpointError',
           'CheckpointReadError', 'CheckpointRefusedError', 'CheckpointTooLargeError',
           'safe_torch_load']
