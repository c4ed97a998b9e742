"""Compatibility shims for the pinned OpenMMLab 2.x stack on recent torch.

Applied once, at ``import mmvitscale``; shims 1 and 2 live in the start-up hook
``mmvitscale_mmengine_hook`` (installed as a ``.pth``), so they also apply when timm,
torchvision or a host package is imported before mmvitscale, or without it. Each shim checks
whether it is needed and does nothing otherwise; none of them edits site-packages. ``APPLIED``
records what was done so tests and bug reports can see it.

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
   checkpoint meta, so ``load_from`` and ``resume`` fail with ``UnpicklingError``; and its
   ``http(s)://`` loader calls ``torch.hub``'s, which unpickles fully. The blunt fix
   (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) would execute arbitrary pickled code from any file.
   Fix: every checkpoint read of ``mmengine.runner.checkpoint`` (local files, URLs, remote
   backends), ``Runner.resume`` included, goes through :func:`torch_load`, that is
   :func:`mmvitscale.checkpoint.safe_load.safe_torch_load`: no code from the file runs, and
   memory is bounded before it is allocated. Local files are stat-ed first (a FIFO or a device
   is refused by what it is); URLs are downloaded into a content-addressed cache
   (:func:`safe_load_url`). ``Runner.resume`` refuses an automatically found checkpoint
   (``last_checkpoint``) outside the work dir and a ``meta['config']`` (which mmengine would
   execute as a Python config), and falls back to the previous checkpoint when an
   automatically found latest one is truncated.
   ``Runner.load_checkpoint`` (``load_from``, ``tools/test.py``) also converts backbone-format
   checkpoints (timm / DeiT / mmpretrain / PiT) or refuses a file none of whose keys fit; it and
   ``init_cfg=dict(type='Pretrained')`` refuse an empty, non-finite or poorly covering
   checkpoint and a head of another ``num_classes`` (:mod:`mmvitscale.checkpoint.loading`).
4. ``launcher='pytorch'`` on a machine without an accelerator (e.g. ``tools/dist_train.sh`` with
   the gloo backend on CPUs): mmengine 0.10.7 calls ``torch.cuda.set_device`` (missing from CPU
   torch) and wraps the model in DDP with ``device_ids=[LOCAL_RANK]``, which DDP refuses for a
   CPU module. Fix, only when no CUDA / NPU / MLU / MUSA device exists: initialise the process
   group without selecting a device, and wrap with ``device_ids=None``.
5. ``launcher='slurm'`` on CPU-only nodes (``GPUS=0 tools/slurm_train.sh``): the same
   ``torch.cuda.set_device`` call after the SLURM_* variables are read. Fix, only without an
   accelerator: run mmengine's ``_init_dist_slurm`` with that call as a no-op (the model wrapper
   fix of 4 applies to every launcher).
6. mmengine's ``PickleHandler`` (``mmengine.load`` / ``mmengine.fileio.load`` of ``.pkl`` /
   ``.pickle`` files: the annotation files of mmdet / mmaction / mmpretrain datasets, result
   files) calls ``pickle.load``, so a hostile annotation file runs code. Fix: its loads go
   through :func:`mmvitscale.checkpoint.safe_load.safe_pickle_load` (plain data, numpy and
   tensors rebuilt without code; any other global refused, naming the file and the global).
   Installed by the start-up hook at mmengine's import (:func:`patch_pickle_files`), so it also
   holds in spawned dataloader workers and host tools that never import mmvitscale.
"""
import contextlib
import os
import os.path as osp
import re
import sys
import threading
import types
from typing import Callable, Iterator, List

import torch

import mmvitscale_mmengine_hook as _hook  # noqa: E402  (the import-time shims live there)

from .fileio import sha256_file

APPLIED: List[str] = _hook.APPLIED  # one list: shims applied here or by the start-up hook
_RESUMING = threading.local()  # inside Runner.resume (its meta is checked)


def patch_torchvision() -> bool:
    """Define torchvision's op schemas when its C library cannot load. Returns True if applied.

    The start-up hook does the same when torchvision is imported before mmvitscale."""
    return _hook.prepare_torchvision()


def patch_mmaction_drn() -> bool:
    """Provide stub ``mmaction.models.localizers.drn`` modules when the wheel lacks them (through
    the start-up hook's finder, so they appear whenever mmaction is imported)."""
    _hook.install()
    return False


# --------------------------------------------------------------------------- checkpoints
def torch_load(filename, map_location=None, **_ignored):
    """Read a checkpoint without running code from it
    (:func:`mmvitscale.checkpoint.safe_load.safe_torch_load`), on every path, resume included.
    Extra keywords (``weights_only``, ``pickle_module``) are ignored on purpose: the caller
    does not get to turn the safety off."""
    from .checkpoint.safe_load import safe_torch_load
    return safe_torch_load(filename, map_location=map_location)


def load_from_local(filename, map_location=None):
    """mmengine's local-file checkpoint scheme, read by :func:`torch_load`: a missing file is
    ``FileNotFoundError``, a FIFO / device / directory a ``CheckpointReadError`` saying what it
    is (mmengine's own says "can not be found" for anything but a regular file)."""
    return torch_load(osp.expanduser(filename), map_location=map_location)


def cache_name(url: str, sha256: str) -> str:
    """The cache file name of ``url`` whose content has ``sha256``: the URL's hash, the
    content's hash and the URL's base name (kept for readers), never the base name alone."""
    import hashlib
    from urllib.parse import urlparse
    base = re.sub(r'[^A-Za-z0-9._-]', '_', osp.basename(urlparse(url).path))[-80:] or 'ckpt'
    url_hash = hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]
    return f'{url_hash}-{sha256[:16]}-{base}'


def cached_download(url: str, model_dir=None, progress: bool = True,
                    check_hash: bool = False) -> str:
    """Download ``url`` into a content-addressed cache (``model_dir``, default torch's hub
    ``checkpoints`` folder) and return the cached file's path.

    The name carries the sha256 of the URL and of the content (:func:`cache_name`), so two
    URLs with the same base name never share an entry, and an entry whose content no longer
    matches its name is downloaded again. With ``check_hash``, the ``-<hex>`` suffix of the
    URL's base name (torch.hub's convention) must prefix the content's sha256.
    """
    import glob
    import hashlib
    import tempfile
    from urllib.parse import urlparse

    from torch.hub import HASH_REGEX, download_url_to_file, get_dir
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    url_hash = hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]
    match = HASH_REGEX.search(osp.basename(urlparse(url).path)) if check_hash else None
    for path in sorted(glob.glob(osp.join(glob.escape(model_dir), f'{url_hash}-*'))):
        content_hash = osp.basename(path).split('-')[1]
        if osp.isfile(path) and sha256_file(path).startswith(content_hash) \
                and (match is None or content_hash.startswith(match.group(1)[:16])):
            return path
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix='.download-', suffix='.tmp')
    os.close(fd)
    try:
        download_url_to_file(url, tmp, match.group(1) if match else None, progress=progress)
        final = osp.join(model_dir, cache_name(url, sha256_file(tmp)))
        os.replace(tmp, final)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return final


def safe_load_url(url: str, model_dir=None, map_location=None, progress: bool = True,
                  check_hash: bool = False, file_name=None):
    """``torch.hub.load_state_dict_from_url`` for mmengine (``http(s)://``, ``torchvision://``,
    ``open-mmlab://``): downloaded by :func:`cached_download`, read by :func:`torch_load`.
    torch's own version and mmengine's ``load_url`` unpickle fully and cache by base name.
    ``file_name`` is ignored (the cache is keyed by content)."""
    from .checkpoint.safe_load import safe_torch_load
    path = cached_download(url, model_dir, progress=progress, check_hash=check_hash)
    return safe_torch_load(path, map_location=map_location, name=f'{url} (cached as {path})')


def _wrap_loader_dispatch(load_checkpoint: Callable) -> Callable:
    """``CheckpointLoader.load_checkpoint`` whose errors name ``filename`` also when a remote
    backend handed the reader bytes instead of a path."""

    def load_checkpoint_named(cls, filename, map_location=None, logger='current'):
        from .checkpoint.safe_load import CheckpointError
        try:
            return load_checkpoint(cls, filename, map_location, logger)
        except CheckpointError as err:
            if str(filename) in str(err):
                raise
            named = type(err)(f'{filename}: {err}', str(filename))
            named.global_name = getattr(err, 'global_name', None)
            raise named from None

    load_checkpoint_named.__wrapped__ = load_checkpoint
    return classmethod(load_checkpoint_named)


class _TorchForCheckpoints(types.ModuleType):
    """``torch`` as seen by mmengine's checkpoint modules: ``load`` is :func:`torch_load`."""

    def __init__(self) -> None:
        super().__init__('torch')
        self.load = torch_load

    def __getattr__(self, name):
        return getattr(torch, name)


def _previous_checkpoints(filename: str) -> List[str]:
    """Checkpoints saved before ``filename`` in its folder (``epoch_N`` / ``iter_N``), newest
    first."""
    pattern = re.compile(r'(epoch|iter)_(\d+)\.pth$')
    match = pattern.search(osp.basename(filename))
    folder = osp.dirname(osp.abspath(filename))
    if match is None or not osp.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        other = pattern.search(name)
        if other and other.group(1) == match.group(1) and int(other.group(2)) < int(match.group(2)):
            found.append((int(other.group(2)), osp.join(folder, name)))
    return [path for _, path in sorted(found, reverse=True)]


def check_auto_resume(filename: str, work_dir: str) -> None:
    """Refuse to resume automatically (``resume=True`` without a file: mmengine reads
    ``<work_dir>/last_checkpoint``) from a checkpoint outside ``work_dir``; the user may still
    name it (``--resume FILE``)."""
    from .checkpoint.safe_load import CheckpointRefusedError
    if '://' in str(filename):
        inside = False
    else:
        real, root = osp.realpath(str(filename)), osp.realpath(str(work_dir))
        inside = osp.commonpath([real, root]) == root
    if not inside:
        raise CheckpointRefusedError(
            f'auto-resume: {osp.join(str(work_dir), "last_checkpoint")} points to {filename}, '
            f'outside the work dir {work_dir}; refusing to resume from it automatically. If you '
            f'trust that file, name it: --resume {filename}', str(filename))


def check_resume_meta(checkpoint, filename: str) -> None:
    """Refuse a checkpoint whose ``meta['config']`` mmengine's ``Runner.resume`` would execute
    as a Python config (mmengine itself writes ``meta['cfg']``, which it does not run)."""
    from .checkpoint.safe_load import CheckpointRefusedError
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if isinstance(meta, dict) and 'config' in meta:
        raise CheckpointRefusedError(
            f'{filename}: refused to resume: its meta holds a "config" entry, which '
            "mmengine's Runner.resume would execute as a Python config file (mmengine writes "
            '"cfg", which is not run)', str(filename), "meta['config']")


def _wrap_resume(resume: Callable) -> Callable:

    def resume_safely(self, filename, *args, **kwargs):
        from .checkpoint.safe_load import CheckpointReadError
        auto = getattr(self, '_load_from', None) is None  # resume=True, found latest
        if auto:
            check_auto_resume(filename, self.work_dir)
        _RESUMING.depth = getattr(_RESUMING, 'depth', 0) + 1
        try:
            try:
                return resume(self, filename, *args, **kwargs)
            except CheckpointReadError as err:
                previous = _previous_checkpoints(filename) if auto else []
                first = err
            for candidate in previous:
                try:
                    result = resume(self, candidate, *args, **kwargs)
                except CheckpointReadError:
                    continue
                import warnings
                warnings.warn(f'resume: {first}; resumed from the previous checkpoint '
                              f'{candidate} instead')
                return result
        finally:
            _RESUMING.depth -= 1
        hint = ('' if previous or not auto else
                ' and no earlier checkpoint in its folder could be read')
        raise CheckpointReadError(f'cannot resume from {filename}: {first}{hint}', str(filename))

    resume_safely.__wrapped__ = resume
    resume_safely.__doc__ = resume.__doc__
    return resume_safely


def _wrap_load_checkpoint(load_checkpoint: Callable) -> Callable:

    def load_checkpoint_adapted(self, filename, map_location='cpu', strict=False,
                                revise_keys=[(r'^module.', '')]):  # noqa: B006 (mmengine's)
        from mmengine.model import is_model_wrapper
        from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

        from .checkpoint.loading import fit_model_checkpoint
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        if getattr(_RESUMING, 'depth', 0):
            check_resume_meta(checkpoint, filename)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        fitted = fit_model_checkpoint(model, checkpoint, filename, revise_keys,
                                      options=self.cfg.get('load_from_options'))
        _load_checkpoint_to_model(model, fitted, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    load_checkpoint_adapted.__wrapped__ = load_checkpoint
    load_checkpoint_adapted.__doc__ = load_checkpoint.__doc__
    return load_checkpoint_adapted


def patch_checkpoint_loading() -> bool:
    """Route every checkpoint read of mmengine, ``Runner.resume`` included, through
    :func:`torch_load`, and let ``load_from`` take backbone-format checkpoints."""
    from mmengine.runner import Runner
    from mmengine.runner import checkpoint as ckpt_module
    if getattr(Runner.resume, '__wrapped__', None) is not None:
        return False
    ckpt_module.torch = _TorchForCheckpoints()  # pavi, ceph, petrel files (read from memory)
    ckpt_module.load_url = safe_load_url  # http(s)://, torchvision://, open-mmlab:// URLs
    loader = ckpt_module.CheckpointLoader
    loader.register_scheme(prefixes='', force=True)(load_from_local)
    loader.load_checkpoint = _wrap_loader_dispatch(loader.load_checkpoint.__func__)
    Runner.resume = _wrap_resume(Runner.resume)
    Runner.load_checkpoint = _wrap_load_checkpoint(Runner.load_checkpoint)
    from mmengine.model.weight_init import PretrainedInit

    from .checkpoint.loading import checked_pretrained_init
    PretrainedInit.__call__ = checked_pretrained_init(PretrainedInit.__call__)  # load checks
    APPLIED.append('scoped-weights-only')
    return True


# --------------------------------------------------------------------------- pickle files
_MMENGINE_LOAD = osp.join('mmengine', 'fileio', 'io.py')


def pickle_source_name(file) -> str:
    """The name of the pickle file ``file`` was read from: its ``name``, else the path given to
    ``mmengine.fileio.load`` (which hands the handler an unnamed ``BytesIO`` of the file)."""
    name = getattr(file, 'name', None)
    if isinstance(name, str):
        return name
    frame = sys._getframe(1)
    for _ in range(6):  # the handler wrappers sit a few frames under mmengine's load
        if frame is None:
            break
        code = frame.f_code
        if code.co_name == 'load' and code.co_filename.endswith(_MMENGINE_LOAD):
            given = frame.f_locals.get('file')
            if isinstance(given, (str, os.PathLike)):
                return os.fspath(given)
        frame = frame.f_back
    return '<pickle stream>'


def pickle_load_from_fileobj(file, encoding: str = 'ASCII', errors: str = 'strict',
                             fix_imports: bool = True, **kwargs):
    """``PickleHandler.load_from_fileobj`` without running code from the file
    (:func:`~mmvitscale.checkpoint.safe_load.safe_pickle_load`); ``encoding`` / ``errors`` as
    for ``pickle.load`` (Python 2 module names are always mapped)."""
    from .checkpoint.safe_load import safe_pickle_load
    _check_pickle_options(kwargs)
    return safe_pickle_load(file, pickle_source_name(file), encoding=encoding, errors=errors)


def pickle_load_from_path(filepath, encoding: str = 'ASCII', errors: str = 'strict',
                          fix_imports: bool = True, **kwargs):
    """``PickleHandler.load_from_path``: a regular file (a FIFO or a device is refused saying
    what it is), read as :func:`pickle_load_from_fileobj` does."""
    from .checkpoint.safe_load import safe_pickle_load
    _check_pickle_options(kwargs)
    return safe_pickle_load(os.fspath(filepath), encoding=encoding, errors=errors)


def _check_pickle_options(kwargs) -> None:
    if kwargs:
        raise TypeError(f'reading a pickle file without running code takes encoding= and '
                        f'errors=, not {", ".join(sorted(kwargs))}')


def patch_pickle_files() -> bool:
    """Route mmengine's ``PickleHandler`` loads through :func:`pickle_load_from_fileobj` (the
    start-up hook usually did it already, at mmengine's import). True if applied now."""
    from mmengine.fileio.handlers import pickle_handler
    return _hook.patch_pickle_handler(pickle_handler)


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
    patch_pickle_files()
    patch_cpu_distributed()
    patch_cpu_slurm()
    return APPLIED[before:]


apply_all()
