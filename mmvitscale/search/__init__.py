"""Architecture search utilities: training-free proxies (As-ViT)."""
from .proxies import length_distortion, ntk_condition, pool_features, score_proxies

__all__ = ['length_distortion', 'ntk_condition', 'pool_features', 'score_proxies']
