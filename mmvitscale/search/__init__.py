"""Architecture search: training-free proxies, budgeted scaling search, As-ViT topology search
and grow-to-family scaling. The submodules import lazily-heavy pieces only when used."""
from .proxies import length_distortion, ntk_condition, pool_features, score_proxies

__all__ = ['length_distortion', 'ntk_condition', 'pool_features', 'score_proxies']
