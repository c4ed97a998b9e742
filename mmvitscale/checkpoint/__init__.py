"""Checkpoint formats: named converters (timm / DeiT, mmpretrain, timm PiT, naver-ai PiT) and
loading with depth / resolution adaptation. Models stay format-agnostic: they only register
:func:`register_checkpoint_hook`."""
from .converters import (CONVERTERS, Converter, convert_state_dict, detect_format,
                         register_converter, unwrap_checkpoint)
from .loading import (LoadResult, adapt_state_dict, fit_state_dict, load_pretrained,
                      register_checkpoint_hook)

__all__ = ['CONVERTERS', 'Converter', 'convert_state_dict', 'detect_format', 'register_converter',
           'unwrap_checkpoint', 'LoadResult', 'adapt_state_dict', 'fit_state_dict',
           'load_pretrained', 'register_checkpoint_hook']
