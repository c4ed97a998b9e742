"""Backbones and necks; importing this module registers them in ``mmvitscale.registry.MODELS``."""
from .layers import Attention, Mlp, TransformerBlock, resample_abs_pos_embed
from .necks import SimpleFeaturePyramid
from .pit import ScaledPiT
from .video_vit import ScaledVideoViT
from .vit import ScaledViT

__all__ = ['Attention', 'Mlp', 'TransformerBlock', 'resample_abs_pos_embed', 'ScaledViT',
           'ScaledPiT', 'SimpleFeaturePyramid', 'ScaledVideoViT']
