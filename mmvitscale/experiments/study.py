"""A study end to end: plan the trial grid, prepare data, run the pool, summarize, report.

:func:`run_grid_study` is what the study tools call: ``tasks x rules x seeds`` trials, rules
compared with a baseline on shared seeds, rank agreement between the source task and the
others. Rows go to ``<out_dir>/trials.jsonl``; rerunning the same call skips finished trials.
"""
import os
import os.path as osp
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import InputError, check_folder, seed_list_error
from . import stats
from .latency import available_backends, measure_arms
from .pool import Say, default_say, run_trials
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
    from ..engine.config import load_with_rule
    from ..rules import check_rule_file
    for rule in rules:
        check_rule_file(rule)
    out: Dict[str, Dict[str, str]] = {}
    for task in tasks:
        for rule in rules:
            try:
                load_with_rule(get_task(task).config_path, rule)
            except ValueError as err:
                out.setdefault(task, {})[rule_label(rule)] = str(err)
    return out


MATCH_MODES = ('flops', 'latency', 'none')


def _arm_cost(task: str, rule: str, match: str, threads: int = 1
              ) -> Tuple[Dict[str, Any], Callable[[Dict[str, Any]], float], Dict[str, Any]]:
    """The rule's scaling as the task's backbone sees it, the cost of that backbone under
    another scaling (``match``: backbone MACs, or the median eager batch-1 latency in ms of
    the latency protocol), and the rule file's full scaling dict."""
    from mmengine.config import Config

    from ..cost.matching import backbone_flops
    from ..fileio import json_ready
    from ..engine.config import load_with_rule
    from .tasks import input_shape
    spec = get_task(task)
    cfg = load_with_rule(spec.config_path, rule)
    backbone = json_ready(cfg.model.backbone)
    shape = input_shape(spec, cfg)

    def cost(scaling: Dict[str, Any]) -> float:
        candidate = dict(backbone, scaling=scaling)
        if match == 'flops':
            return backbone_flops(candidate, shape)
        import torch

        from ..cost.backends import build_model, measure
        from ..cost.matching import family_of_backbone
        fam = family_of_backbone(candidate)  # a refused width raises before building
        geometry = {k: candidate[k] for k in ('num_frames', 'tubelet_size') if k in candidate}
        fam.resolve(candidate['arch'], candidate.get('img_size', 224),
                    candidate.get('patch_size'), scaling, **geometry)
        torch.set_num_threads(threads)
        return measure(build_model(candidate), shape, backend='eager', warmup_s=0.1,
                       repeats=20)['median_ms']
    return dict(backbone.get('scaling') or {}), cost, json_ready(Config.fromfile(rule).scaling)


def match_rules(tasks: Sequence[str], rules: Sequence[str], baseline: str, out_dir: str,
                match: str = 'flops', tolerance: float = 0.05, threads: int = 1,
                not_applicable: Optional[Mapping[str, Mapping[str, str]]] = None,
                say: Optional[Say] = None
                ) -> Tuple[Dict[str, Dict[str, str]], Dict[str, Dict[str, Dict[str, Any]]]]:
    """Re-match every rule to each task baseline's cost by solving its width
    (:func:`mmvitscale.cost.matching.solve_width`).

    Writes each solved rule to ``<out_dir>/matched/<match>/<task>/<rule>.py`` (the same label,
    so trials and reports name the rule as before) with its record beside it (``.json``); a
    rerun reuses a record made from the same rule file, task config and tolerance (latency is
    measured once). ``match='latency'`` widens the tolerance to the baseline's measured
    round-to-round spread when that is larger (its noise floor). Returns ``({task: {rule:
    file}}, {task: {rule: record}})``; ``'none'`` returns empty dicts (the files as written).
    """
    import json

    from ..cost.matching import solve_width, with_width
    from ..fileio import atomic_write
    from .trial import config_digest, rule_digest
    if match not in MATCH_MODES:
        raise TaskError(f'match must be one of {MATCH_MODES}, got {match!r}')
    files: Dict[str, Dict[str, str]] = {}
    records: Dict[str, Dict[str, Dict[str, Any]]] = {}
    if match == 'none':
        return files, records
    say = say or default_say
    for task in tasks:
        todo = [r for r in rules if osp.abspath(r) != osp.abspath(baseline)
                and rule_label(r) not in (not_applicable or {}).get(task, {})]
        if not todo:
            continue
        base_scaling, base_cost, _ = _arm_cost(task, baseline, match, threads)
        target, tol, noise = None, tolerance, None
        folder = osp.join(out_dir, 'matched', match, task)
        for rule in todo:
            label = rule_label(rule)
            ident = dict(rule_sha=rule_digest(rule), baseline_sha=rule_digest(baseline),
                         config_sha=config_digest(get_task(task).config_path, rule),
                         tolerance=tolerance, match=match)
            rec_path, py_path = osp.join(folder, f'{label}.json'), osp.join(folder, f'{label}.py')
            record = None
            if osp.isfile(rec_path) and osp.isfile(py_path):
                with open(rec_path, encoding='utf-8') as f:
                    record = json.load(f)
                record = record if record.get('ident') == ident else None
            if record is None:
                if target is None:
                    if match == 'latency':
                        runs = sorted(base_cost(base_scaling) for _ in range(3))
                        target = runs[1]
                        noise = (runs[-1] - runs[0]) / target
                        tol = max(tolerance, min(noise, 0.5))  # a floor above 50%: no match
                    else:
                        target = base_cost(base_scaling)
                scaling, cost, file_scaling = _arm_cost(task, rule, match, threads)
                m = solve_width(cost, scaling, target, tol, label, task, metric=match)
                if noise is not None and noise > 0.5:
                    m.matched, m.reason = False, (
                        f'rule {label} on task {task}: the baseline\'s eager latency varies by '
                        f'{noise:.0%} between measurements here (its noise floor), so no width '
                        'can be matched to it')
                record = dict(m.as_dict(), ident=ident, noise_floor=noise,
                              file_scaling=with_width(file_scaling, m.value)
                              if m.value is not None else file_scaling)
                text = (f'# {label} re-matched to the {task} baseline\'s {match} '
                        f'(mmvitscale.cost.matching): {rule}\n# with its width solved: '
                        f'{m.knob}={m.value}, x{m.ratio or 0:.3f} the baseline (as written '
                        f'x{m.rule_ratio or 0:.3f}); matched: {m.matched}. {m.reason}\n'
                        f"scaling = {record['file_scaling']!r}\n")
                os.makedirs(folder, exist_ok=True)
                atomic_write(py_path, text)
                atomic_write(rec_path, json.dumps(record, indent=1, default=str) + '\n')
                say(f"{task}: {label} {'matched' if m.matched else 'NOT matched'} at "
                    f"{m.knob}={m.value} (x{m.ratio or 0:.3f} {match}; as written "
                    f"x{m.rule_ratio or 0:.3f}){': ' + m.reason if m.reason else ''}")
            files.setdefault(task, {})[label] = py_path
            records.setdefault(task, {})[label] = record
    return files, records


def plan_grid(tasks: Sequence[str], rules: Sequence[str], seeds: Sequence[int],
              sizes: Optional[Mapping[str, Mapping[str, Any]]] = None,
              det_score_thr: Optional[float] = None,
              not_applicable: Optional[Mapping[str, Mapping[str, str]]] = None,
              rule_files: Optional[Mapping[str, Mapping[str, str]]] = None) -> List[Trial]:
    """Every (task, rule, seed) trial, task-major then seed then rule (arms of a seed finish
    together, so a partial study already has paired seeds), less the ``not_applicable``
    ``{task: {rule label: reason}}`` arms. ``rule_files`` ``{task: {rule label: file}}``
    replaces a rule's file on a task (the rule re-matched to that task's cost, same label).
    Validates before any work."""
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
                    path = (rule_files or {}).get(task, {}).get(rule_label(rule), rule)
                    trials.append(make_trial(task, path, seed, **opts))
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
                   launcher: Optional[Callable[..., List[Dict[str, Any]]]] = None,
                   match: str = 'none') -> Dict[str, Any]:
    """Run (or resume) a tasks x rules x seeds study and write ``<name>.json/.md/.png``.

    ``rules`` are rule files, ``baseline`` one of them. After training, each arm's backbone
    latency is measured on ``latency_backends`` (those this machine runs; ``latency_rounds=0``
    skips it). ``launcher`` runs the trials instead of the local pool, with the signature of
    :func:`~mmvitscale.experiments.pool.run_trials` (e.g. Slurm jobs:
    :func:`mmvitscale.experiments.slurm.launcher_from_args`). ``match`` (``'flops'``,
    ``'latency'`` or ``'none'``): on every task each rule is first re-matched to the task
    baseline's cost by solving its width (:func:`match_rules`, within ``tolerance``), or
    trained as written. Returns the summary
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
            (say or default_say)(f'{task}: {rule} not run: {reason}')
    if match not in MATCH_MODES:
        raise TaskError(f'match must be one of {MATCH_MODES}, got {match!r}')
    out_dir, data_root = osp.abspath(out_dir), osp.abspath(data_root)
    os.makedirs(out_dir, exist_ok=True)
    files, matches = match_rules(tasks, rules, baseline, out_dir, match, tolerance, threads,
                                 skip, say)
    trials = plan_grid(tasks, rules, seeds, sizes, det_score_thr, skip, files)
    prepare_data(trials, data_root, say)
    store = ResultStore(osp.join(out_dir, STORE_NAME))
    rows = (launcher or run_trials)(trials, store, out_dir, data_root, workers=workers,
                                    threads=threads, say=say)
    latency: List[Dict[str, Any]] = []
    backends = available_backends(latency_backends) if latency_rounds > 0 else []
    for backend in latency_backends if latency_rounds > 0 else ():
        if backend not in backends:
            (say or default_say)(f'latency: backend {backend} not timed: it cannot run on '
                                 "this machine's CPU")
    if latency_rounds > 0:
        for task in tasks:
            latency += measure_arms(
                [task], [files.get(task, {}).get(rule_label(r), r) for r in rules
                         if rule_label(r) not in skip.get(task, {})], store,
                backends, rounds=latency_rounds,
                repeats=latency_repeats, threads=threads, say=say)
    summary = summarize(rows, list(tasks), [rule_label(r) for r in rules], rule_label(baseline),
                        list(seeds), source=source, tolerance=tolerance,
                        correction=correction, meta=meta,
                        latency=latency, not_applicable=skip, matches=matches,
                        match=match)
    write_report(summary, out_dir, name, title)
    return summary


# ---------------------------------------------------------------------------- command line
def add_size_args(parser: Any, quick: Mapping[str, int]) -> None:
    """``--quick``, ``--epochs`` and ``--TASK-epochs/-train/-val/-batch`` for every offline
    task (``None``: the task's default), as a grid-study tool takes them."""
    from .tasks import TASKS
    parser.add_argument('--quick', action='store_true',
                        help=f'smoke run: every task at {dict(quick)} unless set per task')
    parser.add_argument('--epochs', type=int, default=None,
                        help='training epochs for every task (overrides --TASK-epochs)')
    for name, spec in TASKS.items():
        if not spec.offline:
            continue
        d, unit = spec.defaults, spec.unit
        parser.add_argument(f'--{name}-epochs', type=int, default=None,
                            help=f'{name}: training epochs (default {d["epochs"]})')
        parser.add_argument(f'--{name}-train', type=int, default=None,
                            help=f'{name}: training {unit}, first N (default {d["train"]})')
        parser.add_argument(f'--{name}-val', type=int, default=None,
                            help=f'{name}: evaluation {unit}, first N (default {d["val"]})')
        parser.add_argument(f'--{name}-batch', type=int, default=None,
                            help=f'{name}: batch size (default {d["batch"] or "the config"})')


def sizes_from_args(args: Any, quick: Mapping[str, int]) -> Dict[str, Dict[str, Any]]:
    """Per task of ``args.tasks``: the command line's epochs / train / val / batch (the
    ``quick`` sizes under ``--quick``; unset: the task's default). ``TaskError`` names the
    flag of a value < 1."""
    from .tasks import TASKS
    out = {}
    for name in args.tasks:
        size = dict(quick) if args.quick and TASKS[name].offline else {}
        for key in ('epochs', 'train', 'val', 'batch'):
            value = getattr(args, f'{name}_{key}', None)
            if value is not None:
                size[key] = value
        if args.epochs is not None:
            size['epochs'] = args.epochs
        for key, value in size.items():
            if value is not None and value < 1:
                raise TaskError(f'--{name}-{key} must be >= 1, got {value}')
        out[name] = size
    return out
