"""Training-time extensions (runners, hooks) for mmengine; registered in mmvitscale.registry."""
from .castling import AuxMaskSparsityHook
from .retokenization import ProgressiveTokenizationHook
from .runner import DataCheckedRunner, missing_data

__all__ = ['AuxMaskSparsityHook', 'DataCheckedRunner', 'ProgressiveTokenizationHook',
           'missing_data']
