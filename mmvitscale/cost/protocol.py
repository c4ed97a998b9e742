"""Guard rails of the latency protocol: the machine's load, the host's own floor, agreement.

A latency is only as good as the quiet it was measured in. This module holds what the
measuring code (:func:`~.backends.measure_interleaved`, :func:`measure_rows`) uses around the
timed runs:

* :func:`loadavg` / :func:`wait_for_quiet`: the 1-minute load average against the cores left
  for the measurement; wait up to a timeout for it to fall, then warn instead of recording
  noise silently;
* :func:`loaded_items`: items whose measuring thread held its core for less than
  :data:`QUIET_SHARE` of the timed wall time (thread CPU time / wall time; with one thread,
  the share of time other processes took the core);
* :func:`gemm_runner`: a fixed single-precision GEMM timed like a model, whose run-to-run spread
  is what this host allows any latency protocol (the floor printed beside the protocol's);
* :func:`agreement`: per-item run-to-run difference of two measurements, median and p90;
* :data:`DEFAULT_STAT`: the row statistic predictors are fitted to, chosen from measurements
  (``docs/results/cost.md``, "Latency protocol").
"""
import os
import statistics
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

STATS = ('median_ms', 'p10_ms', 'min_ms')
DEFAULT_STAT = 'p10_ms'
QUIET_SHARE = 0.9


class LoadWarning(UserWarning):
    """The machine was busier than a clean latency measurement allows."""


def loadavg() -> Tuple[float, float, float]:
    """The 1, 5 and 15-minute load averages (zeros where the OS has none)."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (0.0, 0.0, 0.0)


def usable_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def max_quiet_load(threads: int) -> float:
    """The 1-minute load under which ``threads`` measuring threads have their cores: the CPUs
    left beside them, plus half a CPU of slack (a shell, a logger)."""
    return max(usable_cpus() - threads, 0) + 0.5


def wait_for_quiet(threads: int = 1, max_load: Optional[float] = None, timeout_s: float = 0.0,
                   poll_s: float = 5.0, say: Optional[Callable[[str], None]] = None
                   ) -> Dict[str, Any]:
    """Wait up to ``timeout_s`` for the 1-minute load to fall to ``max_load`` (default
    :func:`max_quiet_load`); if it does not, warn (:class:`LoadWarning`) and go on.

    Returns ``dict(quiet, waited_s, loadavg, max_load)``; ``say`` gets one line per wait.
    """
    if timeout_s < 0 or poll_s <= 0:
        raise ValueError(f'wait_for_quiet: timeout_s must be >= 0 and poll_s > 0, got '
                         f'{timeout_s}, {poll_s}')
    limit = max_quiet_load(threads) if max_load is None else float(max_load)
    t0 = time.monotonic()
    load = loadavg()
    while load[0] > limit and time.monotonic() - t0 < timeout_s:
        if say is not None:
            say(f'load {load[0]:.2f} > {limit:.2f}: waiting for a quieter machine '
                f'({timeout_s - (time.monotonic() - t0):.0f} s left)')
        time.sleep(min(poll_s, max(timeout_s - (time.monotonic() - t0), 0.01)))
        load = loadavg()
    quiet = load[0] <= limit
    if not quiet:
        warnings.warn(f'load average {load[0]:.2f} exceeds {limit:.2f} for {threads} '
                      f'measuring thread(s) on {usable_cpus()} CPUs: latencies will carry '
                      'other processes\' time', LoadWarning, stacklevel=2)
    return dict(quiet=quiet, waited_s=time.monotonic() - t0, loadavg=list(load),
                max_load=limit)


def loaded_items(results: Sequence[Mapping[str, Any]], threshold: float = QUIET_SHARE,
                 warn: bool = True) -> List[int]:
    """Indices of :func:`~.backends.measure_interleaved` results whose ``cpu_share`` is below
    ``threshold`` (the measuring thread was off its core for part of the timed runs); warns
    (:class:`LoadWarning`) naming how many when ``warn``."""
    bad = [i for i, r in enumerate(results)
           if isinstance(r.get('cpu_share'), (int, float)) and r['cpu_share'] < threshold]
    if bad and warn:
        shares = sorted(results[i]['cpu_share'] for i in bad)
        warnings.warn(f'{len(bad)} of {len(results)} items were timed while the measuring '
                      f'thread held its core only {100 * shares[0]:.0f}-'
                      f'{100 * shares[-1]:.0f}% of the wall time (< {100 * threshold:.0f}%): '
                      'the machine was loaded', LoadWarning, stacklevel=2)
    return bad


def _proc_status(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(f'/proc/self/status has no {key}')


def peak_rss_increase(fn: Callable[[], Any]) -> int:
    """Bytes by which one call of ``fn`` raises this process's peak RSS above its current RSS
    (Linux: the peak is reset through ``/proc/self/clear_refs`` first)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # peak RSS := current RSS
    base = _proc_status('VmRSS')
    fn()
    return _proc_status('VmHWM') - base


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def size_and_repeats(description: str, flag: str, default: int, minimum: int,
                     argv: Optional[Sequence[str]] = None) -> Any:
    """The arguments of a load benchmark: ``flag`` (its size, >= ``minimum``), ``--repeats``
    (>= 1) and ``--out`` (a JSON file); argparse refuses a value out of range naming both."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(flag, type=int, default=default)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out', default=None)
    args = parser.parse_args(argv)
    if getattr(args, flag.lstrip('-').replace('-', '_')) < minimum or args.repeats < 1:
        parser.error(f'{flag} must be >= {minimum} and --repeats >= 1')
    return args


def gemm_runner(size: int = 512, seed: int = 0) -> Tuple[Callable[[], Any], Callable[[], None]]:
    """``(run, sync)`` of one fixed float32 ``size^3`` GEMM into a preallocated output: the
    host's own timing floor when timed beside the models."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f'gemm_runner: size must be a positive int, got {size!r}')
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    out = torch.empty(size, size)
    return (lambda: torch.mm(a, b, out=out)), (lambda: None)


def agreement(a: Sequence[float], b: Sequence[float]) -> Dict[str, float]:
    """Run-to-run difference of paired measurements: per item ``200 |a - b| / (a + b)`` (%),
    its median, 90th percentile and maximum over the items."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f'agreement: needs two equally long non-empty samples, got '
                         f'{len(a)} and {len(b)}')
    diffs = sorted(200.0 * abs(x - y) / (x + y) for x, y in zip(a, b))
    p90 = (statistics.quantiles(diffs, n=10, method='inclusive')[-1] if len(diffs) > 1
           else diffs[0])
    return dict(n=len(diffs), median_pct=statistics.median(diffs), p90_pct=p90,
                max_pct=diffs[-1])


def measure_rows(items: Sequence[Mapping[str, Any]], backend: str = 'eager', threads: int = 1,
                 rounds: int = 3, repeats: int = 5, warmup: float = 0.3, clock: str = 'wall',
                 affinity: bool = True, quiet_timeout_s: float = 0.0,
                 say: Optional[Callable[[str], None]] = None,
                 progress: Optional[Callable[[str, int, int], None]] = None
                 ) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Measure models on one CPU setting with the protocol; latency-table rows and a summary.

    ``items``: ``dict(cfg, family, arch, input_shape[, fields])`` per model (``cfg`` a registry
    config, ``arch`` its resolved spec's dict, ``fields`` extra row keys such as a label or a
    rule). The protocol: wait up to ``quiet_timeout_s`` for a quiet machine
    (:func:`wait_for_quiet`, a :class:`LoadWarning` when it stays loaded), pin ``threads`` and
    the CPU affinity (``affinity``; :func:`~.backends.pinned`), prepare every model, then time
    them round robin (:func:`~.backends.measure_interleaved`: ``rounds`` visits of ``repeats``
    timed runs, ``clock`` ``'wall'`` or ``'thread'``); items whose measuring thread held its
    core less than :data:`QUIET_SHARE` of the time are flagged (:func:`loaded_items`).

    Returns ``(rows, info)``: one :func:`~.latency_table.make_row` row per prepared item (with
    ``min_ms`` / ``max_ms``, ``clock``, ``cpus`` and the load average before and after) and
    ``info = dict(failures=[(item index, error)], loaded=[indices into rows], quiet, loadavg,
    noise_pct=median, cpu_share=median, setup_s=[...])``. A model a backend cannot prepare
    (:class:`~.backends.BackendError`) is left out and named in ``failures``.
    """
    from .backends import BackendError, build_model, make_runner, measure_interleaved, pinned
    from .latency_table import fingerprint, make_row
    state = wait_for_quiet(threads, timeout_s=quiet_timeout_s, say=say)
    before = [f'{v:.2f}' for v in loadavg()]
    info: Dict[str, Any] = dict(failures=[], setup_s=[], quiet=state['quiet'])
    kept: List[Mapping[str, Any]] = []
    with pinned(threads, 'auto' if affinity else None) as pin:
        runners = []
        for i, item in enumerate(items):
            model = build_model(item['cfg'])
            t0 = time.perf_counter()
            try:
                run, sync, _ = make_runner(model, tuple(item['input_shape']), backend)
            except BackendError as err:
                info['failures'].append((i, err))
                continue
            info['setup_s'].append(time.perf_counter() - t0)
            runners.append((run, sync))
            kept.append(item)
            if progress is not None:
                progress('prepare', i + 1, len(items))
        results = (measure_interleaved(
            runners, rounds, repeats, warmup, clock=clock,
            progress=None if progress is None else lambda d, t: progress('measure', d, t))
            if runners else [])
        del runners
    after = [f'{v:.2f}' for v in loadavg()]
    fp = fingerprint('cpu', backend, threads)
    if clock != 'wall':
        fp['clock'] = clock
    rows = [make_row(fp, item['family'], item['arch'], list(item['input_shape']), 1, res,
                     min_ms=res['min_ms'], max_ms=res['max_ms'], clock=clock, cpus=pin['cpus'],
                     loadavg=dict(before=before, after=after), **dict(item.get('fields') or {}))
            for item, res in zip(kept, results)]
    info['loaded'] = loaded_items(results) if results else []
    info['loadavg'] = dict(before=before, after=after)
    if results:
        info['noise_pct'] = statistics.median(r['noise_pct'] for r in results)
        info['cpu_share'] = statistics.median(r['cpu_share'] for r in results)
    return rows, info


def measure_backends(model: Any, cfg: Mapping[str, Any], shape: Sequence[int],
                     backends: Sequence[str], batches: Sequence[int] = (1, ),
                     repeats: int = 50, warmup: float = 1.0, device: str = 'cpu',
                     fresh_process: bool = False, scope: Optional[str] = None,
                     family: str = 'vit', arch: Optional[Mapping[str, Any]] = None,
                     fields: Optional[Mapping[str, Any]] = None,
                     progress: Optional[Callable[[str], None]] = None
                     ) -> Tuple[List[Dict[str, Any]], List[str]]:
    """One model on each (backend, batch size) with :func:`~.backends.measure`; latency-table
    rows and the failures (``'<backend> batch <n>: <error>'``; the others are still measured).

    ``model`` is the built module, ``cfg`` its registry config (measured instead of the module
    with ``fresh_process``); ``arch`` the resolved spec's dict; ``fields`` extra row keys.
    """
    from .backends import BackendError, measure
    from .latency_table import fingerprint, make_row
    rows, failures = [], []
    for backend in backends:
        for batch in batches:
            if progress is not None:
                progress(f'{backend} batch {batch}')
            try:
                res = measure(cfg if fresh_process else model, shape, backend,
                              batch_size=batch, warmup_s=warmup, repeats=repeats,
                              device=device, fresh_process=fresh_process, scope=scope)
            except BackendError as err:
                failures.append(f'{backend} batch {batch}: {err}')
                continue
            fp = fingerprint(device, backend, res['threads'])
            rows.append(make_row(fp, family, dict(arch or cfg), shape, batch, res,
                                 min_ms=res['min_ms'], setup_s=res['setup_s'],
                                 fresh_process=bool(fresh_process), **dict(fields or {})))
    return rows, failures
