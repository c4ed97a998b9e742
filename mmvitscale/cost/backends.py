"""Latency of one model on (device, backend) pairs, HW-NAS-Bench protocol.

Backends (:data:`BACKENDS`):

* ``eager``: PyTorch eager, fp32 (on CPU with mmvitscale's oneDNN linear fast path);
* ``compile``: ``torch.compile`` (default mode), compiled before the warm-up;
* ``eager-fp16`` / ``compile-fp16``, ``eager-bf16`` / ``compile-bf16``: the same in half
  precision / bfloat16 (CUDA only);
* ``onnxruntime``: ONNX export (TorchScript exporter, static shapes) then an onnxruntime
  session, CPU provider on ``cpu``, CUDA provider on ``cuda``;
* ``onnxruntime-trt``: onnxruntime's TensorRT provider (CUDA only).

Protocol: eval mode, no autograd, a warm-up of ``warmup_s`` seconds (at least ``min_warmup``
runs), then ``repeats`` timed runs, each bracketed by device synchronisation; the median is the
latency. onnxruntime runs take numpy inputs and return numpy outputs, so on CUDA they include the
host <-> device copies.

Several models at once (:func:`measure_interleaved`): inside :func:`pinned` (thread count and
CPU affinity fixed, restored after), every model is warmed up, then visited round robin
(:func:`interleaved_order`), ``repeats`` timed runs per visit; each model's median, p10 / p90 of
all runs and the spread of its per-round medians (:func:`noise_pct`, the run-to-run noise
floor) are reported.

``fresh_process=True`` measures in a new interpreter (``python -m mmvitscale.cost.backends``,
the model passed as a registry config dict), so allocator / compile caches and thread pools of
earlier measurements cannot leak into it.
"""
import contextlib
import copy
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import (Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple,
                    Union)

import torch
from torch import nn

from ..fileio import json_ready

BACKENDS: Dict[str, Tuple[str, ...]] = {  # backend -> devices it runs on
    'eager': ('cpu', 'cuda'),
    'compile': ('cpu', 'cuda'),
    'eager-fp16': ('cuda', ),
    'compile-fp16': ('cuda', ),
    'eager-bf16': ('cuda', ),
    'compile-bf16': ('cuda', ),
    'onnxruntime': ('cpu', 'cuda'),
    'onnxruntime-trt': ('cuda', ),
}
ORT_PROVIDERS = {
    ('onnxruntime', 'cpu'): ['CPUExecutionProvider'],
    ('onnxruntime', 'cuda'): ['CUDAExecutionProvider', 'CPUExecutionProvider'],
    ('onnxruntime-trt', 'cuda'): ['TensorrtExecutionProvider', 'CUDAExecutionProvider',
                                  'CPUExecutionProvider'],
}
RESULT_MARKER = 'MMVITSCALE_LATENCY_RESULT '
ModelLike = Union[nn.Module, Mapping]


class BackendError(RuntimeError):
    """A backend that cannot run here, or failed to prepare the model."""


def check_backend(backend: str, device: str = 'cpu') -> None:
    """Raise ``ValueError`` unless ``backend`` is known and can run on ``device`` here."""
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r} (choose from {", ".join(BACKENDS)})')
    dev = torch.device(device)
    if dev.type not in BACKENDS[backend]:
        raise ValueError(f'backend {backend!r} needs device '
                         f'{" or ".join(BACKENDS[backend])}, got {device!r}')
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'device {device!r} requested but CUDA is not available')
    if backend.startswith('onnxruntime'):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ValueError(f'backend {backend!r} needs the onnxruntime package') from err
        wanted = ORT_PROVIDERS[(backend, dev.type)][0]
        if wanted not in ort.get_available_providers():
            raise ValueError(f'backend {backend!r} on {device!r} needs onnxruntime\'s {wanted}; '
                             f'this install has {ort.get_available_providers()}')


def build_model(cfg: Mapping, scope: Optional[str] = None) -> nn.Module:
    """Build a model from a registry config dict (``scope``: the host's default scope)."""
    from mmengine.registry import MODELS, init_default_scope
    import mmvitscale.models  # noqa: F401  (registers ScaledViT / ScaledPiT)
    init_default_scope(scope or 'mmvitscale')
    return MODELS.build(dict(cfg))


def _example(model: nn.Module, input_shape: Sequence[int], batch_size: int,
             device: Optional[torch.device] = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device('cpu')
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_shape, generator=gen)
    return x.to(device=device, dtype=dtype)


def export_onnx(model: nn.Module, input_shape: Sequence[int], path: str, opset: int = 17,
                batch_size: int = 1, dynamic_batch: bool = False) -> str:
    """Export ``model`` (eval mode) to ONNX at ``path``, atomically; returns ``path``.

    ``input_shape`` is one sample's shape without the batch dim, e.g. ``(3, 224, 224)``. The
    TorchScript exporter (``dynamo=False``) is tried first, then the ``torch.export`` one; both
    run under :func:`~mmvitscale.models.layers.eager_linear`, so only standard ops are exported.
    The graph is written to a temporary file next to ``path``, checked with ``onnx.checker`` and
    renamed over ``path``: readers never see a partial file. Outputs are named ``output_<i>``.
    """
    import onnx

    from ..models.layers import eager_linear
    was_training = model.training
    model.eval()
    x = _example(model, input_shape, batch_size)
    with torch.no_grad():
        outs = model(x)
    num_out = len(outs) if isinstance(outs, (tuple, list)) else 1
    names = [f'output_{i}' for i in range(num_out)]
    axes = {n: {0: 'batch'} for n in ['input', *names]} if dynamic_batch else None
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + osp.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    errors = []
    try:
        for dynamo in (False, True):
            try:
                with warnings.catch_warnings(), eager_linear(), torch.no_grad():
                    warnings.simplefilter('ignore')  # tracer / deprecation chatter
                    kwargs = dict(dynamic_axes=axes) if not dynamo else {}
                    if dynamo and dynamic_batch:
                        kwargs = dict(dynamic_shapes=({0: torch.export.Dim('batch')}, ))
                    torch.onnx.export(model, (x, ), tmp, opset_version=opset,
                                      input_names=['input'], output_names=names,
                                      dynamo=dynamo, **kwargs)
                onnx.checker.check_model(tmp)
                break
            except Exception as err:  # noqa: BLE001 - report both exporters' failures
                errors.append(f'{"dynamo" if dynamo else "torchscript"} exporter: '
                              f'{type(err).__name__}: {err}')
        else:
            raise BackendError(f'ONNX export of {type(model).__name__} failed; '
                               + '; '.join(errors))
        os.replace(tmp, path)
    finally:
        model.train(was_training)
        if osp.exists(tmp):
            os.remove(tmp)
    return path


def _timings(run: Callable[[], Any], sync: Callable[[], None], warmup_s: float,
             min_warmup: int, repeats: int) -> Tuple[List[float], int]:
    start, runs = time.perf_counter(), 0
    while runs < min_warmup or time.perf_counter() - start < warmup_s:
        run()
        runs += 1
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times, runs


def _torch_runner(model: nn.Module, x: torch.Tensor, backend: str) -> Callable[[], Any]:
    if not backend.startswith('compile'):
        return lambda: model(x)
    try:
        # fresh dynamo caches: after too many recompiles of one forward (many architectures
        # measured in one process) dynamo would silently fall back to eager
        torch._dynamo.reset()
        compiled = torch.compile(model)
        compiled(x)  # compiles here, outside the warm-up
    except Exception as err:  # noqa: BLE001 - inductor raises many types
        hint = (' (on CPU, inductor needs a working C++ compiler)'
                if x.device.type == 'cpu' else '')
        raise BackendError(f"backend 'compile' failed for {type(model).__name__} on "
                           f'{x.device}{hint}: {type(err).__name__}: {err}') from err
    return lambda: compiled(x)


def _ort_runner(model: nn.Module, input_shape: Sequence[int], batch_size: int, backend: str,
                device: torch.device, opset: int) -> Tuple[Callable[[], Any], Dict[str, Any]]:
    import onnxruntime as ort
    providers = ORT_PROVIDERS[(backend, device.type)]
    with tempfile.TemporaryDirectory(prefix='mmvitscale_onnx_') as folder:
        path = export_onnx(model, input_shape, osp.join(folder, 'model.onnx'), opset,
                           batch_size=batch_size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            sess = ort.InferenceSession(path, opts, providers=providers)
        except Exception as err:  # noqa: BLE001
            raise BackendError(f'onnxruntime session with {providers[0]} failed: '
                               f'{type(err).__name__}: {err}') from err
    if sess.get_providers()[0] != providers[0]:
        raise BackendError(f'onnxruntime fell back from {providers[0]} to '
                           f'{sess.get_providers()[0]}')
    feed = {'input': _example(model, input_shape, batch_size, torch.device('cpu')).numpy()}
    info = dict(onnxruntime=ort.__version__, provider=providers[0],
                ort_threads=opts.intra_op_num_threads)
    return (lambda: sess.run(None, feed)), info


def measure(model: ModelLike, input_shape: Sequence[int] = (3, 224, 224), backend: str = 'eager',
            batch_size: int = 1, warmup_s: float = 1.0, repeats: int = 50,
            device: str = 'cpu', min_warmup: int = 3, opset: int = 17,
            fresh_process: bool = False, scope: Optional[str] = None,
            timeout: Optional[float] = None) -> Dict[str, Any]:
    """Forward latency of ``model`` on ``backend`` / ``device`` in milliseconds per batch.

    Args:
        model: an ``nn.Module``, or a registry config dict (built with :func:`build_model` in
            ``scope``); ``fresh_process=True`` needs the dict (plain data crosses processes).
        input_shape: one sample's shape without the batch dim.
        backend: a key of :data:`BACKENDS`.
        batch_size, warmup_s, repeats, min_warmup: the protocol (module docstring).
        device: ``'cpu'`` or ``'cuda[:i]'``; the module is moved there (the fp16 backends
            measure a half-precision copy; onnxruntime exports it where it is).
        opset: ONNX opset for the onnxruntime backends.
        fresh_process: measure in a new ``python -m mmvitscale.cost.backends`` process (same
            torch thread count as here).
        timeout: seconds before a fresh process is killed (``BackendError``).

    Returns:
        ``dict(median_ms, p10_ms, p90_ms, mean_ms, min_ms, max_ms, repeats, warmup_runs,
        batch_size, backend, device, threads, setup_s)`` plus backend details
        (``onnxruntime`` version, ``provider``, ``ort_threads``).

    Raises:
        ValueError: unknown backend, or one that cannot run on ``device`` here.
        BackendError: the backend failed to prepare or run the model.
    """
    check_backend(backend, device)
    if repeats < 1 or batch_size < 1:
        raise ValueError(f'repeats and batch_size must be >= 1, got {repeats}, {batch_size}')
    if fresh_process:
        if isinstance(model, nn.Module):
            raise TypeError('fresh_process=True needs the model as a registry config dict '
                            '(plain data), not an nn.Module')
        payload = dict(model=json_ready(model), scope=scope, input_shape=list(input_shape),
                       backend=backend, batch_size=batch_size, warmup_s=warmup_s,
                       repeats=repeats, device=device, min_warmup=min_warmup, opset=opset,
                       threads=torch.get_num_threads())
        return _measure_in_subprocess(payload, timeout)
    if not isinstance(model, nn.Module):
        model = build_model(model, scope)
    dev = torch.device(device)
    was_training = model.training
    t0 = time.perf_counter()
    try:
        run, sync, info = make_runner(model, input_shape, backend, batch_size, device, opset)
        setup_s = time.perf_counter() - t0
        with torch.no_grad():
            times, warmup_runs = _timings(run, sync, warmup_s, min_warmup, repeats)
    finally:
        model.train(was_training)
    return dict(summarise(times), warmup_runs=warmup_runs, batch_size=batch_size,
                backend=backend, device=str(dev), threads=torch.get_num_threads(),
                setup_s=setup_s, **info)


def summarise(times: Sequence[float]) -> Dict[str, Any]:
    """``median_ms``, ``p10_ms``, ``p90_ms`` (inclusive quantiles: within [min, max]),
    ``mean_ms``, ``min_ms``, ``max_ms`` and ``repeats`` of timed runs in ms."""
    times = sorted(float(t) for t in times)
    if not times:
        raise ValueError('summarise: no timings')
    q = (statistics.quantiles(times, n=10, method='inclusive') if len(times) > 1 else
         [times[0]] * 9)
    return dict(median_ms=statistics.median(times), p10_ms=q[0], p90_ms=q[-1],
                mean_ms=statistics.fmean(times), min_ms=times[0], max_ms=times[-1],
                repeats=len(times))


def make_runner(model: nn.Module, input_shape: Sequence[int], backend: str = 'eager',
                batch_size: int = 1, device: str = 'cpu', opset: int = 17
                ) -> Tuple[Callable[[], Any], Callable[[], None], Dict[str, Any]]:
    """``(run, sync, info)`` for one model on ``backend``: ``run()`` does one forward pass
    (no autograd), ``sync()`` waits for the device. The model is put in eval mode."""
    check_backend(backend, device)
    dev = torch.device(device)
    model.eval()
    info: Dict[str, Any] = {}
    with torch.no_grad():
        if backend.startswith('onnxruntime'):
            run, info = _ort_runner(model, input_shape, batch_size, backend, dev, opset)
            return run, (lambda: None), info  # session.run returns host arrays
        half = {'fp16': torch.float16, 'bf16': torch.bfloat16}
        dtype = half.get(backend.rsplit('-', 1)[-1], torch.float32)
        net = copy.deepcopy(model) if dtype != torch.float32 else model
        net = net.to(device=dev, dtype=dtype)
        x = _example(net, input_shape, batch_size, dev, dtype)
        fwd = _torch_runner(net, x, backend)

    def run() -> Any:
        with torch.no_grad():
            return fwd()

    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else (lambda: None)
    return run, sync, info


def backbone_config(config: Optional[str] = None, rule: Optional[str] = None,
                    arch: Optional[str] = None, family: str = 'vit'
                    ) -> Tuple[Dict[str, Any], Optional[str]]:
    """A backbone's registry config and scope: ``model.backbone`` of the config file
    ``config`` (in its ``default_scope``), or ``family``'s ``arch`` (default: the family's
    default preset) scaled by the ``scaling`` dict of the rule file ``rule``."""
    from mmengine.config import Config

    from ..families import get_family
    from ..rules import derive_image
    if config is not None:
        cfg = Config.fromfile(config)
        backbone = cfg.get('model', {}).get('backbone')
        if backbone is None:
            raise ValueError(f'CONFIG: {config} has no model.backbone')
        return backbone.to_dict(), cfg.get('default_scope')
    scaling = Config.fromfile(rule).scaling if rule is not None else None
    arch = arch or get_family(family).default_arch
    return derive_image(family, arch, scaling)['backbone'], None


def describe_model(model: nn.Module, cfg: Mapping[str, Any]
                   ) -> Tuple[str, Dict[str, Any], List[int]]:
    """Family name, resolved arch dict and default input shape ``[C, H, W]`` of a model built
    from ``cfg``."""
    from ..families import FAMILIES
    kind = str(cfg.get('type', type(model).__name__)).split('.')[-1]
    family = next((f.name for f in FAMILIES.values() if f.backbone_type.endswith('.' + kind)),
                  kind)
    spec = getattr(model, 'arch_spec', None)
    arch = spec.as_dict() if spec is not None and hasattr(spec, 'as_dict') else dict(cfg)
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = conv.in_channels if conv is not None else 3
    size = list(spec.img_size) if spec is not None else [224, 224]
    return family, arch, [channels, *size]


# ---------------------------------------------------------------------------- protocol
THREAD_ENV = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')
CLOCKS = ('wall', 'thread')


def _tasks() -> List[int]:
    try:
        return [int(t) for t in os.listdir('/proc/self/task')]
    except OSError:
        return [0]


def _set_affinity(cpus: Sequence[int]) -> None:
    for tid in _tasks():  # every thread, also the intra-op pool created before
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # a thread that ended meanwhile
            pass


@contextlib.contextmanager
def pinned(threads: int, cpus: Union[None, str, Sequence[int]] = 'auto'
           ) -> Iterator[Dict[str, Any]]:
    """Pin the thread count and CPU affinity for a measurement; restore both on exit.

    Sets ``torch.set_num_threads(threads)`` and the ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` /
    ``OPENBLAS_NUM_THREADS`` variables (read by onnxruntime sessions and subprocesses created
    inside), and, where ``os.sched_setaffinity`` exists, the CPU affinity of every thread of
    this process: ``cpus='auto'`` takes the first ``threads`` CPUs this process may use, a list
    names them, ``None`` leaves the affinity alone. Yields ``dict(threads, cpus)`` (``cpus``
    ``None`` when not pinned).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f'pinned: threads must be a positive int, got {threads!r}')
    can_pin = hasattr(os, 'sched_setaffinity') and hasattr(os, 'sched_getaffinity')
    old_aff = sorted(os.sched_getaffinity(0)) if can_pin else None
    chosen: Optional[List[int]] = None
    if cpus is not None and can_pin:
        if isinstance(cpus, str):
            if cpus != 'auto':
                raise ValueError(f"pinned: cpus must be 'auto', None or a list of CPU ids, "
                                 f'got {cpus!r}')
            chosen = old_aff[:threads] if len(old_aff) >= threads else list(old_aff)
        else:
            chosen = sorted({int(c) for c in cpus})
            bad = [c for c in chosen if c not in old_aff]
            if bad or not chosen:
                raise ValueError(f'pinned: cpus {list(cpus)!r} are not all usable here '
                                 f'(allowed: {old_aff})')
    old_threads = torch.get_num_threads()
    old_env = {k: os.environ.get(k) for k in THREAD_ENV}
    try:
        torch.set_num_threads(threads)
        for k in THREAD_ENV:
            os.environ[k] = str(threads)
        if chosen is not None:
            _set_affinity(chosen)
        yield dict(threads=threads, cpus=chosen)
    finally:
        torch.set_num_threads(old_threads)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if chosen is not None and old_aff is not None:
            _set_affinity(old_aff)


def interleaved_order(n_items: int, rounds: int) -> List[Tuple[int, int]]:
    """``(round, item)`` visits: every item once per round, round ``r`` starting at item
    ``r mod n`` (round robin, rotated), so no item gets all its runs in a row and slow drifts
    of the machine's load spread over all items."""
    if n_items < 1 or rounds < 1:
        raise ValueError(f'interleaved_order: needs n_items >= 1 and rounds >= 1, got '
                         f'{n_items}, {rounds}')
    return [(r, (r + j) % n_items) for r in range(rounds) for j in range(n_items)]


def _clock(kind: str) -> Callable[[], float]:
    if kind == 'wall':
        return time.perf_counter
    if kind == 'thread':
        return time.thread_time
    raise ValueError(f'clock must be one of {CLOCKS}, got {kind!r}')


def noise_pct(round_medians: Sequence[float]) -> float:
    """Run-to-run spread of one item: ``100 * (max - min) / median`` of its round medians
    (0 with one round)."""
    m = [float(v) for v in round_medians]
    if not m:
        raise ValueError('noise_pct: no round medians')
    return 100.0 * (max(m) - min(m)) / statistics.median(m)


def measure_interleaved(runners: Sequence[Tuple[Callable[[], Any], Callable[[], None]]],
                        rounds: int = 3, repeats: int = 5, warmup_s: float = 0.3,
                        min_warmup: int = 2, visit_warmup: int = 1, clock: str = 'wall',
                        progress: Optional[Callable[[int, int], None]] = None
                        ) -> List[Dict[str, Any]]:
    """Time several prepared ``(run, sync)`` pairs, interleaved round robin.

    Protocol: each runner is warmed up (``warmup_s`` seconds, at least ``min_warmup`` runs);
    then :func:`interleaved_order` visits every runner once per round; a visit does
    ``visit_warmup`` untimed runs (caches refilled after the previous item) and ``repeats``
    timed runs, each bracketed by ``sync``. ``clock='thread'`` times by this thread's CPU time
    (one thread only: other processes' time slices are not counted). Returns per runner
    :func:`summarise` of all its ``rounds * repeats`` timings plus ``rounds``,
    ``round_medians_ms``, ``noise_pct`` (:func:`noise_pct`, the run-to-run spread) and
    ``cpu_share``: this thread's CPU time over the wall time of the timed runs (with one
    thread, below 1 by the share of time other processes held the core).
    """
    for name, value, low in (('rounds', rounds, 1), ('repeats', repeats, 1),
                             ('min_warmup', min_warmup, 0), ('visit_warmup', visit_warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f'measure_interleaved: {name} must be an int >= {low}, '
                             f'got {value!r}')
    now = _clock(clock)
    if not runners:
        raise ValueError('measure_interleaved: no runners')
    for run, sync in runners:
        start, n = time.perf_counter(), 0
        while n < min_warmup or time.perf_counter() - start < warmup_s:
            run()
            n += 1
        sync()
    times: List[List[float]] = [[] for _ in runners]
    medians: List[List[float]] = [[] for _ in runners]
    on_cpu = [[0.0, 0.0] for _ in runners]  # this thread's CPU time, wall time
    order = interleaved_order(len(runners), rounds)
    for done, (_, i) in enumerate(order, 1):
        run, sync = runners[i]
        for _ in range(visit_warmup):
            run()
        sync()
        visit = []
        for _ in range(repeats):
            c0, w0 = time.thread_time(), time.perf_counter()
            t0 = now()
            run()
            sync()
            visit.append((now() - t0) * 1e3)
            on_cpu[i][1] += time.perf_counter() - w0
            on_cpu[i][0] += time.thread_time() - c0
        times[i] += visit
        medians[i].append(statistics.median(visit))
        if progress is not None:
            progress(done, len(order))
    return [dict(summarise(t), rounds=rounds, round_medians_ms=m, noise_pct=noise_pct(m),
                 clock=clock, cpu_share=c / w if w > 0 else None)
            for t, m, (c, w) in zip(times, medians, on_cpu)]


def _measure_in_subprocess(payload: Dict[str, Any], timeout: Optional[float]) -> Dict[str, Any]:
    env = dict(os.environ)
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    env['PYTHONPATH'] = os.pathsep.join(p for p in (root, env.get('PYTHONPATH')) if p)
    cmd = [sys.executable, '-m', 'mmvitscale.cost.backends']
    try:
        proc = subprocess.run(cmd, input=json.dumps(payload), capture_output=True, text=True,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise BackendError(f'fresh-process measurement of {payload["backend"]!r} timed out '
                           f'after {timeout} s') from err
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if proc.returncode or not lines:
        tail = '\n'.join(proc.stderr.strip().splitlines()[-15:])
        raise BackendError(f'fresh-process measurement of {payload["backend"]!r} failed '
                           f'(exit {proc.returncode}):\n{tail}')
    result = json.loads(lines[-1][len(RESULT_MARKER):])
    result['fresh_process'] = True
    return result


def _main() -> int:
    """Child side of ``fresh_process``: JSON payload on stdin, marked JSON result on stdout."""
    import mmvitscale  # noqa: F401  (shims before mmengine / host packages)
    payload = json.loads(sys.stdin.read())
    torch.set_num_threads(int(payload.pop('threads')))
    result = measure(payload.pop('model'), fresh_process=False, **payload)
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(_main())
