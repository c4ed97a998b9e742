"""mmvitscale: hardware-aware scaling of plain Vision Transformers for OpenMMLab."""
from . import compat  # noqa: F401  (applies the stack shims before anything else imports)
from .version import __version__

try:  # ``_base_ = 'mmvitscale::...'`` for mmengine; usually already active via its .pth file
    import mmvitscale_mmengine_hook
except ImportError:  # pragma: no cover - module not installed (bare source tree off sys.path)
    pass
else:
    mmvitscale_mmengine_hook.install()  # idempotent; patches mmengine if imported already

__all__ = ['__version__']
