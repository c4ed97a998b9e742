"""Compatibility shims for the pinned OpenMMLab 2.x stack on recent torch.

Applied once, at ``import mmvitscale``. Each shim checks whether it is needed and does
nothing otherwise; none of them edits site-packages. ``APPLIED`` records what was done so tests
and bug reports can see it.

1. ``torchvision`` (CUDA-only wheels for torch 2.13): importing it on CPU torch raises
   ``RuntimeError: operator torchvision::nms does not exist`` because its C library cannot load
   and ``torchvision/_meta_registrations.py`` registers fake kernels for ops that were never
   defined. mmdet / mmaction only catch ``ImportError`` and mmpretrain needs torchvision, so all
   three crash. Fix: before torchvision is first imported, and only when its ``_C`` library fails
   to load, define the op schemas it expects. The pure-Python parts (transforms, models, box
   utilities) then work; torchvision's own nms / roi_align stay unavailable (mmdet uses mmcv's).
2. ``mmaction2 1.2.0`` wheel lacks ``mmaction/models/localizers/drn`` while
   ``localizers/__init__.py`` imports ``.drn.drn.DRN``: ``import mmaction.models`` fails.
   Fix: when (and only when) that folder is missing, register stub modules whose ``DRN`` raises a
   clear error if someone actually builds it.
3. ``torch >= 2.6`` loads with ``weights_only=True`` by default, while mmengine 0.10.7 calls
   ``torch.load`` without the argument and stores ``HistoryBuffer`` / numpy objects in the
   checkpoint meta, so ``load_from`` and ``resume`` fail with ``UnpicklingError``. The blunt fix
   (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) would execute arbitrary pickled code from any file.
   Scoped fix: mmengine's local checkpoint loader always uses ``weights_only=True`` and the few
   data-only classes mmengine checkpoints contain are allow-listed, except inside
   ``Runner.resume`` (resuming a run's own checkpoint), which may fully unpickle.
4. ``launcher='pytorch'`` on a machine without an accelerator (e.g. ``tools/dist_train.sh`` with
   the gloo backend on CPUs): mmengine 0.10.7 calls ``torch.cuda.set_device`` (missing from CPU
   torch) and wraps the model in DDP with ``device_ids=[LOCAL_RANK]``, which DDP refuses for a
   CPU module. Fix, only when no CUDA / NPU / MLU / MUSA device exists: initialise the process
   group without selecting a device, and wrap with ``device_ids=None``.
5. ``launcher='slurm'`` on CPU-only nodes (``GPUS=0 tools/slurm_train.sh``): the same
   ``torch.cuda.set_device`` call after the SLURM_* variables are read. Fix, only without an
   accelerator: run mmengine's ``_init_dist_slurm`` with that call as a no-op (the model wrapper
   fix of 4 applies to every launcher).
"""
import contextlib
import importlib.machinery
import importlib.util
import os.path as osp
import pickle
import sys
import threading
import types
from typing import Callable, Iterator, List

import torch

APPLIED: List[str] = []
_TORCHVISION_LIB = None  # keeps the torch.library fragment alive
_TRUST = threading.local()

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


def _torchvision_c_loads() -> bool:
    """Whether torchvision's compiled ops load into this torch (without importing torchvision)."""
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: nothing to fix
    pkg_dir = spec.submodule_search_locations[0]
    lib = importlib.machinery.EXTENSION_SUFFIXES
    candidates = [osp.join(pkg_dir, '_C' + suffix) for suffix in lib]
    path = next((p for p in candidates if osp.exists(p)), None)
    if path is None:
        return False
    try:
        torch.ops.load_library(path)
    except (OSError, RuntimeError):
        return False
    return hasattr(torch.ops.torchvision, 'nms')


def patch_torchvision() -> bool:
    """Define torchvision's op schemas when its C library cannot load. Returns True if applied."""
    global _TORCHVISION_LIB
    if 'torchvision' in sys.modules or _TORCHVISION_LIB is not None:
        return False
    if _torchvision_c_loads():
        return False
    lib = torch.library.Library('torchvision', 'DEF')  # noqa: TOR901
    for schema in _TORCHVISION_SCHEMAS:
        lib.define(schema)
    _TORCHVISION_LIB = lib
    APPLIED.append('torchvision-schemas')
    return True


class _MissingDRN:
    """Stand-in for mmaction's DRN localizer, absent from the mmaction2 1.2.0 wheel."""

    def __init__(self, *args, **kwargs):
        raise ImportError('mmaction2 1.2.0 was packaged without mmaction/models/localizers/drn; '
                          'install mmaction2 from source to use the DRN localizer.')


def patch_mmaction_drn() -> bool:
    """Register stub ``mmaction.models.localizers.drn`` modules when the wheel lacks them."""
    if 'mmaction.models.localizers.drn' in sys.modules:
        return False
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        return False
    drn_dir = osp.join(spec.submodule_search_locations[0], 'models', 'localizers', 'drn')
    if osp.isdir(drn_dir):
        return False
    pkg = types.ModuleType('mmaction.models.localizers.drn')
    pkg.__path__ = []  # a package, so ``from .drn.drn import DRN`` resolves
    mod = types.ModuleType('mmaction.models.localizers.drn.drn')
    mod.DRN = _MissingDRN
    pkg.drn = mod
    sys.modules[pkg.__name__] = pkg
    sys.modules[mod.__name__] = mod
    APPLIED.append('mmaction-drn-stub')
    return True


# --------------------------------------------------------------------------- checkpoints
def _mmengine_safe_globals() -> list:
    """Data-only classes found in mmengine checkpoints, allowed for ``weights_only`` loads."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    safe = [HistoryBuffer, np.ndarray, np.dtype]
    try:  # numpy 1.x location of the array / scalar reconstructors
        from numpy.core.multiarray import _reconstruct, scalar
        safe += [_reconstruct, scalar]
    except ImportError:  # pragma: no cover - numpy 2
        from numpy._core.multiarray import _reconstruct, scalar
        safe += [_reconstruct, scalar]
    safe += [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    return safe


def trusted_load_active() -> bool:
    """True inside :func:`trusted_checkpoints` (e.g. while ``Runner.resume`` runs)."""
    return getattr(_TRUST, 'depth', 0) > 0


@contextlib.contextmanager
def trusted_checkpoints() -> Iterator[None]:
    """Allow full unpickling for checkpoint loads in this block (the run's own files only)."""
    _TRUST.depth = getattr(_TRUST, 'depth', 0) + 1
    try:
        yield
    finally:
        _TRUST.depth -= 1


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for mmengine checkpoints that resolves only data classes.

    Allowed: torch's own weights-only allowlist, mmengine's ``HistoryBuffer`` and numpy array /
    scalar reconstruction. ``getattr`` (how bound methods pickle) is only allowed to fetch one of
    ``HistoryBuffer``'s statistics methods from a ``HistoryBuffer`` instance. Anything else,
    e.g. ``os.system``, raises ``UnpicklingError`` before it can be called.
    """

    def find_class(self, module: str, name: str):
        if (module, name) in (('builtins', 'getattr'), ('__builtin__', 'getattr')):
            return _history_buffer_getattr
        allowed = _allowed_globals()
        key = f'{module}.{name}'
        if key in allowed:
            return allowed[key]
        raise pickle.UnpicklingError(f'refusing to load global {key} from a checkpoint '
                                     '(only tensors and mmengine data classes are allowed)')


def _history_buffer_getattr(obj, name):
    from mmengine.logging import HistoryBuffer
    HistoryBuffer()  # its __init__ registers the built-in statistics (min, max, current, mean)
    if (obj is HistoryBuffer or isinstance(obj, HistoryBuffer)) and \
            name in HistoryBuffer._statistics_methods:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'refusing getattr({type(obj).__name__}, {name!r}) '
                                 'in a checkpoint')


def _allowed_globals() -> dict:
    from torch._weights_only_unpickler import _get_allowed_globals
    allowed = dict(_get_allowed_globals())
    for obj in _mmengine_safe_globals():
        allowed[f'{obj.__module__}.{obj.__name__}'] = obj
    return allowed


_restricted_pickle = types.ModuleType('mmvitscale_restricted_pickle')
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.__name__ = 'mmvitscale_restricted_pickle'


def torch_load(filename, map_location=None):
    """Load a checkpoint without executing pickled code, unless trusted.

    Inside :func:`trusted_checkpoints` (``Runner.resume``) this is a full ``torch.load``.
    Otherwise it is ``torch.load(weights_only=True)`` with mmengine's data classes allowed, and,
    for mmengine checkpoints whose message hub pickles bound methods, a restricted unpickler
    that resolves nothing but tensors and those data classes.
    """
    if trusted_load_active():
        return torch.load(filename, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(_mmengine_safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first_error = err
    try:
        return torch.load(filename, map_location=map_location, weights_only=False,
                          pickle_module=_restricted_pickle)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(f'{err}\n(weights-only load said: {first_error})') from None


def load_from_local(filename: str, map_location=None):
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch_load(filename, map_location=map_location)


def _wrap_resume(resume: Callable) -> Callable:

    def resume_trusted(self, *args, **kwargs):
        with trusted_checkpoints():
            return resume(self, *args, **kwargs)

    resume_trusted.__wrapped__ = resume
    resume_trusted.__doc__ = resume.__doc__
    return resume_trusted


def patch_checkpoint_loading() -> bool:
    """Make mmengine's local checkpoint loading weights-only, except for ``Runner.resume``."""
    if 'weights_only' not in torch.load.__code__.co_varnames:  # pragma: no cover - old torch
        return False
    from mmengine.runner import Runner
    from mmengine.runner.checkpoint import CheckpointLoader
    if getattr(Runner.resume, '__wrapped__', None) is not None:
        return False
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_from_local)
    Runner.resume = _wrap_resume(Runner.resume)
    APPLIED.append('scoped-weights-only')
    return True


# --------------------------------------------------------------------------- CPU distributed
def _no_accelerator() -> bool:
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    return not (is_cuda_available() or is_npu_available() or is_mlu_available()
                or is_musa_available())


def _wrap_init_dist_pytorch(init: Callable) -> Callable:

    def init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if init_backend != 'torch' or not _no_accelerator():
            return init(backend, init_backend=init_backend, **kwargs)
        torch.distributed.init_process_group(backend=backend, **kwargs)  # no set_device

    init_dist_pytorch.__wrapped__ = init
    return init_dist_pytorch


@contextlib.contextmanager
def _no_set_device() -> Iterator[None]:
    """``torch.cuda.set_device`` as a no-op (CPU torch lacks the call it makes)."""
    set_device = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = set_device


def _wrap_init_dist_slurm(init: Callable) -> Callable:

    def init_dist_slurm(backend, *args, **kwargs):
        if not _no_accelerator():
            return init(backend, *args, **kwargs)
        with _no_set_device():  # mmengine's SLURM_* handling, less the device selection
            return init(backend, *args, **kwargs)

    init_dist_slurm.__wrapped__ = init
    return init_dist_slurm


def _is_ddp(model_wrapper_cfg) -> bool:
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel
    wrapper = model_wrapper_cfg.get('type', 'MMDistributedDataParallel')
    if isinstance(wrapper, str):
        wrapper = MODEL_WRAPPERS.get(wrapper)
    return isinstance(wrapper, type) and issubclass(wrapper, DistributedDataParallel)


def _wrap_wrap_model(wrap_model: Callable) -> Callable:

    def wrap_model_cpu(self, model_wrapper_cfg, model):
        if self.distributed and _no_accelerator():
            if model_wrapper_cfg is None:  # what mmengine builds, less the device id
                model_wrapper_cfg = dict(
                    type='MMDistributedDataParallel', broadcast_buffers=False,
                    find_unused_parameters=self.cfg.get('find_unused_parameters', False))
            if 'device_ids' not in model_wrapper_cfg and _is_ddp(model_wrapper_cfg):
                model_wrapper_cfg = dict(model_wrapper_cfg, device_ids=None)
        return wrap_model(self, model_wrapper_cfg, model)

    wrap_model_cpu.__wrapped__ = wrap_model
    return wrap_model_cpu


def patch_cpu_distributed() -> bool:
    """Let mmengine's ``pytorch`` launcher run on CPU-only machines (gloo backend)."""
    from mmengine.dist import utils as dist_utils
    from mmengine.runner import Runner
    if getattr(dist_utils._init_dist_pytorch, '__wrapped__', None) is not None:
        return False
    if not _no_accelerator():  # mmengine's own path selects the device
        return False
    dist_utils._init_dist_pytorch = _wrap_init_dist_pytorch(dist_utils._init_dist_pytorch)
    Runner.wrap_model = _wrap_wrap_model(Runner.wrap_model)
    APPLIED.append('cpu-distributed')
    return True


def patch_cpu_slurm() -> bool:
    """Let mmengine's ``slurm`` launcher run on CPU-only nodes (``GPUS=0 tools/slurm_train.sh``).

    mmengine 0.10.7's ``_init_dist_slurm`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
    MASTER_PORT from the SLURM_* variables, then calls ``torch.cuda.set_device``, which CPU torch
    lacks. Only that call is skipped; the model is wrapped as for ``pytorch`` (``device_ids=None``).
    """
    from mmengine.dist import utils as dist_utils
    if getattr(dist_utils._init_dist_slurm, '__wrapped__', None) is not None:
        return False
    if not _no_accelerator():
        return False
    dist_utils._init_dist_slurm = _wrap_init_dist_slurm(dist_utils._init_dist_slurm)
    APPLIED.append('cpu-slurm')
    return True


def apply_all() -> List[str]:
    """Apply every shim that is needed; returns the names of those applied now."""
    before = len(APPLIED)
    patch_torchvision()
    patch_mmaction_drn()
    patch_checkpoint_loading()
    patch_cpu_distributed()
    patch_cpu_slurm()
    return APPLIED[before:]


apply_all()
