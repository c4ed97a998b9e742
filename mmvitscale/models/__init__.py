"""Backbones and necks; importing this module registers them in ``mmvitscale.registry.MODELS``."""
from .asvit import AsViT
from .layers import Attention, Mlp, TransformerBlock, resample_abs_pos_embed
from .linear_attention import LinearAngularAttention, convert_to_inference
from .necks import SimpleFeaturePyramid
from .pit import ScaledPiT
from .video_vit import ScaledVideoViT
from .vit import ScaledViT

__all__ = ['AsViT', 'Attention', 'LinearAngularAttention', 'Mlp', 'ScaledPiT', 'ScaledVideoViT',
           'ScaledViT', 'SimpleFeaturePyramid', 'TransformerBlock', 'convert_to_inference',
           'resample_abs_pos_embed']
