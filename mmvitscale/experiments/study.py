"""A study end to end: plan the trial grid, prepare data, run the pool, summarize, report.

:func:`run_grid_study` is what the study tools call: ``tasks x rules x seeds`` trials, rules
compared with a baseline on shared seeds, rank agreement between the source task and the
others. Rows go to ``<out_dir>/trials.jsonl``; rerunning the same call skips finished trials.
"""
import os
import os.path as osp
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..errors import InputError, check_folder, seed_list_error
from . import stats
from .latency import available_backends, measure_arms
from .pool import Say, _default_say, run_trials
from .report import summarize, write_report
from .store import ResultStore
from .tasks import TaskError, ensure_data, get_task
from .trial import Trial, make_trial, rule_label

STORE_NAME = 'trials.jsonl'


def check_study_inputs(tasks: Sequence[str], seeds: Sequence[int],
                       latency_backends: Sequence[str] = (), out_dir: Optional[str] = None,
                       data_root: Optional[str] = None) -> None:
    """The checks every study tool shares, before any work: an :class:`InputError` naming the
    first bad argument (``tasks``, ``seeds``, ``latency_backends``, ``out_dir``,
    ``data_root``); a tool shows it with its own flags (``err.format(flag)``).

    A task given twice is refused (the first task is the source, the others targets: a task
    cannot be both), an unknown latency backend is refused listing the known ones (a known one
    this machine cannot run is skipped and said), seeds as :func:`seed_list_error`, folders as
    :func:`~mmvitscale.errors.folder_error` (not a file, not under one, writable, not /proc).
    """
    from ..cost.backends import BACKENDS
    from .tasks import TASKS
    if not tasks:
        raise InputError('tasks', 'a study needs at least one task')
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise InputError('tasks', f'unknown task {unknown[0]!r} (choose from '
                         f'{", ".join(sorted(TASKS))})')
    twice = [t for i, t in enumerate(tasks) if t in tasks[:i]]
    if twice:
        raise InputError('tasks', f'{twice[0]!r} is given twice, got {" ".join(tasks)}: each '
                         'task runs once (the first is the source, the others targets)')
    problem = seed_list_error(seeds)
    if problem:
        raise InputError('seeds', problem)
    bad = [b for b in latency_backends if b not in BACKENDS]
    if bad:
        raise InputError('latency_backends', f'unknown backend {bad[0]!r} (choose from '
                         f'{", ".join(BACKENDS)})')
    for name, path in (('out_dir', out_dir), ('data_root', data_root)):
        if path is not None:
            check_folder(path, name)


def applicability(tasks: Sequence[str], rules: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """``{task: {rule label: reason}}`` for the rules a task's config cannot be built under
    (e.g. a depth multiplier that leaves a PiT stage without blocks); loads every config.

    A rule file that is no rule at all (missing, no ``scaling`` dict) raises ``ValueError``.
    """
    from ..rules import _check_rule_file, load_with_rule
    for rule in rules:
        _check_rule_file(rule)
    out: Dict[str, Dict[str, str]] = {}
    for task in tasks:
        for rule in rules:
            try:
                load_with_rule(get_task(task).config_path, rule)
            except ValueError as err:
                out.setdefault(task, {})[rule_label(rule)] = str(err)
    return out


def plan_grid(tasks: Sequence[str], rules: Sequence[str], seeds: Sequence[int],
              sizes: Optional[Mapping[str, Mapping[str, Any]]] = None,
              det_score_thr: Optional[float] = None,
              not_applicable: Optional[Mapping[str, Mapping[str, str]]] = None) -> List[Trial]:
    """Every (task, rule, seed) trial, task-major then seed then rule (arms of a seed finish
    together, so a partial study already has paired seeds), less the ``not_applicable``
    ``{task: {rule label: reason}}`` arms. Validates before any work."""
    if not tasks:
        raise ValueError('a study needs at least one task')
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f'seeds must be distinct and non-empty, got {list(seeds)}')
    labels = [rule_label(r) for r in rules]
    if len(set(labels)) != len(labels):
        raise ValueError(f'rule files need distinct names, got {labels}')
    sizes = sizes or {}
    trials = []
    for task in tasks:
        opts = dict(sizes.get(task, {}))
        if det_score_thr is not None and get_task(task).kind == 'det':
            opts['det_score_thr'] = det_score_thr
        for seed in seeds:
            for rule in rules:
                if rule_label(rule) not in (not_applicable or {}).get(task, {}):
                    trials.append(make_trial(task, rule, seed, **opts))
    return trials


def prepare_data(trials: Sequence[Trial], data_root: str,
                 say: Optional[Say] = None) -> Dict[str, Dict[str, int]]:
    """Generate / verify each offline task's data once, at the largest size any trial uses."""
    counts = {}
    for task in dict.fromkeys(t.task for t in trials):
        spec = get_task(task)
        need = dict(train=None, val=None)
        for t in trials:
            if t.task == task:
                for k in need:
                    v = t.opts.get(k)
                    need[k] = max(need[k] or 0, v) if v else need[k]
        if say and spec.offline:
            say(f'{task}: data under {osp.join(data_root, spec.data_dir)}')
        counts[task] = ensure_data(spec, data_root, need)
    return counts


def run_grid_study(tasks: Sequence[str], rules: Sequence[str], baseline: str,
                   seeds: Sequence[int], out_dir: str, data_root: str, name: str,
                   title: str, sizes: Optional[Mapping[str, Mapping[str, Any]]] = None,
                   det_score_thr: Optional[float] = None, source: Optional[str] = None,
                   workers: int = 1, threads: int = 1, tolerance: float = 0.15,
                   correction: str = 'bonferroni', meta: Optional[Mapping[str, Any]] = None,
                   latency_backends: Sequence[str] = ('eager',), latency_rounds: int = 3,
                   latency_repeats: int = 20, say: Optional[Say] = None,
                   launcher: Optional[Callable[..., List[Dict[str, Any]]]] = None
                   ) -> Dict[str, Any]:
    """Run (or resume) a tasks x rules x seeds study and write ``<name>.json/.md/.png``.

    ``rules`` are rule files, ``baseline`` one of them. After training, each arm's backbone
    latency is measured on ``latency_backends`` (those this machine runs; ``latency_rounds=0``
    skips it). ``launcher`` runs the trials instead of the local pool, with the signature of
    :func:`~mmvitscale.experiments.pool.run_trials` (e.g. Slurm jobs:
    :func:`mmvitscale.experiments.slurm.launcher_from_args`). Returns the summary
    (:func:`mmvitscale.experiments.report.summarize`; ``correction`` as there).
    """
    check_study_inputs(list(tasks), list(seeds), list(latency_backends), out_dir, data_root)
    try:  # before any training: the check summarize makes at the end
        stats.family_confidence(0.95, 1, correction)
    except ValueError as err:
        raise TaskError(str(err)) from err
    if osp.abspath(baseline) not in [osp.abspath(r) for r in rules]:
        rules = [baseline] + list(rules)
    skip = applicability(tasks, rules)
    if any(rule_label(baseline) in v for v in skip.values()):
        task, why = next((t, v[rule_label(baseline)]) for t, v in skip.items()
                         if rule_label(baseline) in v)
        raise TaskError(f'baseline {baseline} does not apply to task {task}: {why}')
    for task, why in skip.items():
        for rule, reason in why.items():
            (say or _default_say)(f'{task}: {rule} not run: {reason}')
    trials = plan_grid(tasks, rules, seeds, sizes, det_score_thr, skip)
    out_dir, data_root = osp.abspath(out_dir), osp.abspath(data_root)
    os.makedirs(out_dir, exist_ok=True)
    prepare_data(trials, data_root, say)
    store = ResultStore(osp.join(out_dir, STORE_NAME))
    rows = (launcher or run_trials)(trials, store, out_dir, data_root, workers=workers,
                                    threads=threads, say=say)
    latency: List[Dict[str, Any]] = []
    backends = available_backends(latency_backends) if latency_rounds > 0 else []
    for backend in latency_backends if latency_rounds > 0 else ():
        if backend not in backends:
            (say or _default_say)(f'latency: backend {backend} not timed: it cannot run on '
                                  "this machine's CPU")
    if latency_rounds > 0:
        for task in tasks:
            latency += measure_arms(
                [task], [r for r in rules if rule_label(r) not in skip.get(task, {})], store,
                backends, rounds=latency_rounds,
                repeats=latency_repeats, threads=threads, say=say)
    summary = summarize(rows, list(tasks), [rule_label(r) for r in rules], rule_label(baseline),
                        list(seeds), source=source, tolerance=tolerance,
                        correction=correction, meta=meta,
                        latency=latency, not_applicable=skip)
    write_report(summary, out_dir, name, title)
    return summary
