"""Training-time extensions (runners, hooks) for mmengine; registered in mmvitscale.registry."""
from .retokenization import ProgressiveTokenizationHook
from .runner import DataCheckedRunner, missing_data

__all__ = ['DataCheckedRunner', 'ProgressiveTokenizationHook', 'missing_data']
