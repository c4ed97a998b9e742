"""Let mmengine load ``mmvitscale::`` base configs, in any interpreter, without heavy imports.

mmengine 0.10 resolves ``_base_ = 'pkg::path'`` only for the packages listed in
``mmengine.config.utils.MODULE2PACKAGE`` ("mmengine does not support to load mmvitscale
config" otherwise), and builds every object of such a base config in the scope ``pkg``.
mmvitscale configs are host configs: they declare the host's ``default_scope`` (mmpretrain,
mmdet, mmaction) and name our own types ``mmvitscale.X``; the ``mmvitscale`` scope has no
registry for ``ImageClassifier`` or ``FashionMNIST``. So this module makes two changes, each the
moment the mmengine module concerned is first imported (or at once if it already is):

1. ``MODULE2PACKAGE['mmvitscale'] = 'mmvitscale'`` (``mmengine.config.utils``);
2. ``Config._get_cfg_path`` reports no scope for ``mmvitscale::`` paths, so their objects are
   built in the scope the config declares (``mmengine.config.config``).

Activation: ``mmvitscale-mmengine-hook.pth``, which mmvitscale's ``setup.py`` installs into
site-packages (wheels / ``pip install .``, ``setup.py develop`` / ``pip install --no-use-pep517
-e .``, PEP 660 editable installs), imports this module at interpreter start. Importing it
costs a meta path entry, nothing else: no mmengine, torch or mmvitscale. ``import mmvitscale``
imports it too. Nothing on disk is edited.
"""
from __future__ import annotations

import sys

TYPE_CHECKING = False  # ``typing`` costs ~8 ms at every interpreter start: annotations only
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional

PACKAGE = 'mmvitscale'
_MARK = '_mmvitscale_hook'


def patch_module2package(module: Any) -> bool:
    """Add ``mmvitscale`` to ``mmengine.config.utils.MODULE2PACKAGE``. True if changed."""
    table = getattr(module, 'MODULE2PACKAGE', None)
    if not isinstance(table, dict) or table.get(PACKAGE) == PACKAGE:
        return False
    table[PACKAGE] = PACKAGE
    return True


def patch_config_scope(module: Any) -> bool:
    """Make ``Config._get_cfg_path`` return no scope for ``mmvitscale::``. True if changed."""
    config = getattr(module, 'Config', None)
    raw = getattr(config, '__dict__', {}).get('_get_cfg_path')
    if not isinstance(raw, staticmethod) or getattr(raw.__func__, _MARK, False):
        return False
    original = raw.__func__

    def _get_cfg_path(cfg_path: str, filename: str, *args, **kwargs):
        path, scope = original(cfg_path, filename, *args, **kwargs)
        return path, (None if scope == PACKAGE else scope)

    _get_cfg_path.__doc__ = original.__doc__
    _get_cfg_path.__wrapped__ = original
    setattr(_get_cfg_path, _MARK, True)
    config._get_cfg_path = staticmethod(_get_cfg_path)
    return True


PATCHES: Dict[str, Callable[[Any], bool]] = {
    'mmengine.config.utils': patch_module2package,
    'mmengine.config.config': patch_config_scope,
}


def _apply(patch: Callable[[Any], bool], module: Any) -> None:
    """Run a patch; a failure warns instead of breaking mmengine's import in every process."""
    try:
        patch(module)
    except Exception as err:  # pragma: no cover - an mmengine this hook does not know
        import warnings
        warnings.warn(f'mmvitscale_mmengine_hook: {patch.__name__} failed ({err!r}); '
                      "'mmvitscale::' configs may not load")


class _PatchingLoader:
    """Delegates to the real loader; applies the patch once the module has executed."""

    def __init__(self, loader: Any, patch: Callable[[Any], bool]) -> None:
        self._loader = loader
        self._patch = patch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        _apply(self._patch, module)


class _Finder:
    """``sys.meta_path`` entry that wraps the loaders of the modules in :data:`PATCHES`."""

    _mmvitscale_hook = True

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[Any]:
        patch = PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, 'find_spec', None)
            if getattr(finder, _MARK, False) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if hasattr(spec.loader, 'exec_module'):
            spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


def installed() -> bool:
    """Whether the import hook is on ``sys.meta_path`` (tests, bug reports)."""
    return any(getattr(finder, _MARK, False) for finder in sys.meta_path)


def install() -> None:
    """Patch the target modules already imported; catch the others on import. Idempotent."""
    for name, patch in PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            _apply(patch, module)
    if not installed():
        sys.meta_path.insert(0, _Finder())


install()
