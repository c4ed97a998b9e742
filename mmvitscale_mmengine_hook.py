"""Start-up hook: ``mmvitscale::`` base configs for mmengine, and the stack's import-time shims,
in any interpreter and any import order, without heavy imports at start.

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

It also applies, at the moment they are needed and whatever was imported first (``timm``,
``torchvision``, a host package, or nothing of mmvitscale at all), the import-time shims of
the pinned stack that ``mmvitscale.compat`` documents:

3. just before ``torchvision`` is first imported, and only when its compiled ops cannot load into
   this torch, define the op schemas it registers fake kernels for (:func:`prepare_torchvision`);
4. when ``mmaction.models.localizers.drn`` is imported and the installed mmaction2 lacks it (the
   1.2.0 wheel), provide stub modules whose ``DRN`` raises a clear error;
5. when ``mmengine.fileio.handlers.pickle_handler`` is imported, route ``PickleHandler``'s loads
   (``mmengine.load`` of ``.pkl`` files) through mmvitscale's restricted unpickler
   (:func:`patch_pickle_handler`; mmvitscale itself is imported only when a pickle is read).

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
APPLIED: list = []  # names of the shims applied in this process (``mmvitscale.compat.APPLIED``)
_BUSY: set = set()  # names this finder is resolving (find_spec re-enters through importlib)
_TORCHVISION_LIB = None  # keeps the torch.library fragment alive

# Schemas copied from torchvision/csrc/ops/*.cpp (torchvision 0.15 - 0.28).
_TORCHVISION_SCHEMAS = (
    'nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
    'qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
    'roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, '
    'SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor',
    '_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, '
    'SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, '
    'int sampling_ratio, bool aligned) -> Tensor',
    'roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, '
    'SymInt pooled_width) -> (Tensor, Tensor)',
    '_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, '
    'SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, '
    'SymInt height, SymInt width) -> Tensor',
    'ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, '
    'SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)',
    '_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, '
    'float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, '
    'SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor',
    'ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, '
    'SymInt pooled_width) -> (Tensor, Tensor)',
    '_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, '
    'float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, '
    'SymInt channels, SymInt height, SymInt width) -> Tensor',
    'deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, '
    'SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, '
    'SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor',
    '_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, '
    'Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, '
    'SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, '
    'bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)',
)
DRN_PACKAGE = 'mmaction.models.localizers.drn'


def _real_spec(fullname: str, path: Any = None, target: Any = None) -> Optional[Any]:
    """The spec the other finders on ``sys.meta_path`` give for ``fullname`` (None if none)."""
    for finder in sys.meta_path:
        find = getattr(finder, 'find_spec', None)
        if getattr(finder, _MARK, False) or find is None:
            continue
        spec = find(fullname, path, target)
        if spec is not None:
            return spec
    return None


def _torchvision_c_loads() -> bool:
    """Whether torchvision's compiled ops load into this torch (without importing torchvision)."""
    import importlib.machinery
    import os.path as osp

    import torch
    spec = _real_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: nothing to fix
    pkg_dir = list(spec.submodule_search_locations)[0]
    candidates = [osp.join(pkg_dir, '_C' + s) for s in importlib.machinery.EXTENSION_SUFFIXES]
    path = next((p for p in candidates if osp.exists(p)), None)
    if path is None:
        return False
    try:
        torch.ops.load_library(path)
    except (OSError, RuntimeError):
        return False
    return hasattr(torch.ops.torchvision, 'nms')


def prepare_torchvision() -> bool:
    """Define torchvision's op schemas when its C library cannot load. True if applied now."""
    global _TORCHVISION_LIB
    if 'torchvision' in sys.modules or _TORCHVISION_LIB is not None:
        return False
    if _torchvision_c_loads():
        return False
    import torch
    lib = torch.library.Library('torchvision', 'DEF')  # noqa: TOR901
    for schema in _TORCHVISION_SCHEMAS:
        lib.define(schema)
    _TORCHVISION_LIB = lib
    APPLIED.append('torchvision-schemas')
    return True


class MissingDRN:
    """Stand-in for mmaction's DRN localizer, absent from the mmaction2 1.2.0 wheel."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ImportError('mmaction2 1.2.0 was packaged without mmaction/models/localizers/drn; '
                          'install mmaction2 from source to use the DRN localizer.')


class _DRNStubLoader:
    """Creates ``mmaction.models.localizers.drn`` (a package) and its ``drn`` module."""

    def create_module(self, spec: Any) -> None:
        return None  # the default module object

    def exec_module(self, module: Any) -> None:
        if module.__name__ == DRN_PACKAGE:
            module.__path__ = []
            if 'mmaction-drn-stub' not in APPLIED:
                APPLIED.append('mmaction-drn-stub')
        else:
            module.DRN = MissingDRN


def _drn_stub_spec(fullname: str, path: Any, target: Any) -> Optional[Any]:
    real = _real_spec(fullname, path, target)
    if real is not None:
        return real
    import importlib.machinery
    return importlib.machinery.ModuleSpec(fullname, _DRNStubLoader(),
                                          is_package=fullname == DRN_PACKAGE)


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


def patch_pickle_handler(module: Any) -> bool:
    """Make mmengine's ``PickleHandler`` (``mmengine.load`` / ``mmengine.fileio.load`` of
    ``.pkl`` / ``.pickle`` files: annotation and result files) read through mmvitscale's
    restricted unpickler (``mmvitscale.compat.pickle_load_from_fileobj``), which runs no code
    from the file. Done here, at mmengine's import, so that it also holds in processes that never
    import mmvitscale (spawned dataloader workers, host tools). True if changed."""
    handler = getattr(module, 'PickleHandler', None)
    current = getattr(handler, '__dict__', {}).get('load_from_fileobj')
    if handler is None or getattr(current, _MARK, False):
        return False
    originals = (current, handler.__dict__.get('load_from_path'))

    def load_from_fileobj(self: Any, file: Any, **kwargs: Any) -> Any:
        from mmvitscale.compat import pickle_load_from_fileobj
        return pickle_load_from_fileobj(file, **kwargs)

    def load_from_path(self: Any, filepath: Any, **kwargs: Any) -> Any:
        from mmvitscale.compat import pickle_load_from_path
        return pickle_load_from_path(filepath, **kwargs)

    for method, original in zip((load_from_fileobj, load_from_path), originals):
        method.__wrapped__ = original
        method.__doc__ = getattr(original, '__doc__', None)
        setattr(method, _MARK, True)
        setattr(handler, method.__name__, method)
    APPLIED.append('safe-pickle-files')
    return True


PATCHES: Dict[str, Callable[[Any], bool]] = {
    'mmengine.config.utils': patch_module2package,
    'mmengine.config.config': patch_config_scope,
    'mmengine.fileio.handlers.pickle_handler': patch_pickle_handler,
}


def _apply(patch: Callable[[Any], bool], module: Any) -> None:
    """Run a patch; a failure warns instead of breaking an import in every process."""
    try:
        patch(module)
    except Exception as err:  # pragma: no cover - a stack this hook does not know
        import warnings
        warnings.warn(f'mmvitscale_mmengine_hook: {getattr(patch, "__name__", patch)} failed '
                      f'({err!r})')


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
        if fullname in _BUSY:
            return None
        if fullname == 'torchvision':
            _BUSY.add(fullname)
            try:
                _apply(lambda _: prepare_torchvision(), None)
            finally:
                _BUSY.discard(fullname)
            return None  # the regular finders import it, now with the schemas defined
        if fullname in (DRN_PACKAGE, DRN_PACKAGE + '.drn'):
            return _drn_stub_spec(fullname, path, target)
        patch = PATCHES.get(fullname)
        if patch is None:
            return None
        spec = _real_spec(fullname, path, target)
        if spec is None:
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
