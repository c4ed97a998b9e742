"""Training-time extensions (runners, hooks) for mmengine; registered in mmvitscale.registry."""
from .runner import DataCheckedRunner, missing_data

__all__ = ['DataCheckedRunner', 'missing_data']
