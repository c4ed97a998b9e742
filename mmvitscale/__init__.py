"""mmvitscale: hardware-aware scaling of plain Vision Transformers for OpenMMLab."""
from . import compat  # noqa: F401  (applies the stack shims before anything else imports)
from .version import __version__

__all__ = ['__version__']
