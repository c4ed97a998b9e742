"""Does the training-free proxy predict accuracy? The logic of ``tools/proxy_correlation.py``.

Samples distinct architectures of the scaling space :data:`GRIDS` around the Fashion-MNIST ViT
base :data:`BASE` of :data:`CONFIG` (:func:`sample_rules`), trains each briefly with mmengine's
stock Runner once per training seed (:func:`train_arch`), scores it with the As-ViT proxies
(:func:`proxy_arch`: NTK condition number, lower is better; length distortion, higher is
better; no final LayerNorm), keeping every finished training and proxy score in a resume log
(:func:`measure_archs`), and reports Kendall's tau of each proxy and of their combined rank
(As-ViT rank sum) against the seed-mean top-1, with a bootstrap interval over architectures,
the tau against each training seed alone, and how well two training seeds rank the
architectures alike (the ceiling any proxy can reach at this budget) (:func:`correlations`,
:func:`build_report`, :func:`write_report`). Ranks, Kendall tau and its interval are
:mod:`mmvitscale.experiments.stats`'.
"""
import json
import math
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..fileio import atomic_write, pyplot, save_figure
from ..errors import InputError, seed_list_error
from ..search.rule_sampling import sample_grid_rules
from ..search.rule_search import BaseSpec, write_rule_file
from . import stats
from .console import loadavg_text
from .stats import fmt_tau
from .store import ResultStore, owning_study
from .tasks import ROOT, configure, ensure_data, get_task

CONFIG = osp.join(ROOT, 'configs', 'cls', 'scaled_vit_fmnist.py')
# the config's task base (kept in step with configs/cls/scaled_vit_fmnist.py)
BASE = BaseSpec(family='vit', arch=dict(embed_dims=64, num_layers=6, num_heads=2, mlp_ratio=4.0),
                img_size=32, patch_size=4, in_channels=1)
GRIDS: Dict[str, Sequence[Any]] = dict(
    depth_mult=(0.5, 1.0, 1.5), width_mult=(0.5, 0.75, 1.0, 1.25), heads=(1, 2, 4),
    mlp_ratio_mult=(0.5, 1.0), patch_size=(4, 8))
LOG_NAME = 'runs.jsonl'
REPORT_STEM = 'proxy_correlation'
# the settings that decide a training's / a proxy score's result (resume-log identity)
TRAIN_KEYS = ('train', 'val', 'epochs', 'batch')
PROXY_KEYS = ('seed', 'proxy_batch', 'proxy_inits', 'proxy_points')
BOOTSTRAP_DRAWS = 2000
GOAL_TAU = 0.5  # the combined rank's target (issue 6)

Rule = Dict[str, Any]


@dataclass(frozen=True)
class CorrelationSpec:
    """What the study samples, trains and scores.

    Attributes:
        num_archs: architectures to sample.
        train: training images (the first N).
        val: test images (the first N).
        epochs: training epochs per architecture.
        batch: training batch size.
        seed: sampling and proxy seed (which architectures, the proxies' initialisation).
        train_seeds: every architecture is trained once per seed (data order and init), with
            the same seeds for all.
        threads: torch CPU threads (reported; the caller sets them).
        workers: data loader workers.
        proxy_batch: NTK batch size.
        proxy_inits: proxy initialisations.
        proxy_points: length-distortion circle points.
        data_root: folder holding ``fashion_mnist/``.
    """

    num_archs: int = 30
    train: int = 4000
    val: int = 1000
    epochs: int = 2
    batch: int = 64
    seed: int = 0
    train_seeds: Tuple[int, ...] = (0, 1, 2)
    threads: int = 1
    workers: int = 0
    proxy_batch: int = 8
    proxy_inits: int = 1
    proxy_points: int = 6
    data_root: str = field(default=osp.join(ROOT, 'data'))

    def settings(self) -> Dict[str, Any]:
        """Everything that decides the study's numbers (reported in ``meta``)."""
        return dict(self.train_settings(), **self.proxy_settings(),
                    train_seeds=list(self.train_seeds))

    def train_settings(self) -> Dict[str, int]:
        """What decides one training besides its seed (:data:`TRAIN_KEYS`)."""
        return {k: getattr(self, k) for k in TRAIN_KEYS}

    def proxy_settings(self) -> Dict[str, int]:
        """What decides an architecture's proxy scores (:data:`PROXY_KEYS`)."""
        return {k: getattr(self, k) for k in PROXY_KEYS}


def spec_from_flags(flags: Any) -> CorrelationSpec:
    """The study inputs named by ``tools/proxy_correlation.py``'s flags (``--data-root`` made
    absolute)."""
    f = flags
    return CorrelationSpec(
        num_archs=f.num_archs, train=f.train, val=f.val, epochs=f.epochs, batch=f.batch,
        seed=f.seed, train_seeds=tuple(f.train_seeds), threads=f.threads, workers=f.workers,
        proxy_batch=f.proxy_batch, proxy_inits=f.proxy_inits, proxy_points=f.proxy_points,
        data_root=osp.abspath(f.data_root))


def check_spec(spec: CorrelationSpec) -> None:
    """Check every input before any work.

    Raises:
        InputError: naming the first bad field (``num_archs``, ``train``, ``val``, ``epochs``,
            ``batch``, ``threads``, ``proxy_batch``, ``proxy_inits``, ``proxy_points``: must be
            >= 1; ``workers``: must be >= 0; ``seed``: must be >= 0; ``train_seeds``: distinct
            integers >= 0); ``detail`` is e.g. ``'must be >= 1, got N'``.
    """
    for name in ('num_archs', 'train', 'val', 'epochs', 'batch', 'threads', 'proxy_batch',
                 'proxy_inits', 'proxy_points'):
        value = getattr(spec, name)
        if value < 1:
            raise InputError(name, f'must be >= 1, got {value}')
    if spec.workers < 0:
        raise InputError('workers', 'must be >= 0')
    if spec.seed < 0:
        raise InputError('seed', f'must be >= 0, got {spec.seed}')
    problem = seed_list_error(spec.train_seeds)
    if problem:
        raise InputError('train_seeds', problem)


# ---------------------------------------------------------------------------- sampling
def rule_key(rule: Mapping[str, Any]) -> str:
    """Canonical text of a rule (the resume log's key)."""
    return json.dumps(dict(sorted(rule.items())), sort_keys=True)


def arch_of(rule: Mapping[str, Any], base: BaseSpec = BASE) -> Dict[str, Any]:
    """The architecture ``rule`` resolves to on ``base`` (raises ``ValueError`` if none)."""
    spec = base.resolve(rule)
    return dict(depth=spec.num_layers, width=spec.embed_dims, heads=spec.num_heads,
                mlp_ratio=spec.mlp_ratio, patch_size=spec.patch_size,
                img_size=list(spec.img_size))


def base_rule(grids: Mapping[str, Sequence[Any]] = GRIDS, base: BaseSpec = BASE) -> Rule:
    """The rule of ``grids``' keys that leaves ``base`` as it is (absolute ``heads`` and
    ``patch_size`` at the base's values, every multiplier 1)."""
    return {k: (base.arch['num_heads'] if k == 'heads' else
                base.patch_size if k == 'patch_size' else 1.0) for k in grids}


def sample_rules(num: int, seed: int = 0, grids: Mapping[str, Sequence[Any]] = GRIDS,
                 base: BaseSpec = BASE) -> List[Rule]:
    """``num`` rules of distinct resolved architectures, drawn without replacement (seeded,
    :func:`mmvitscale.search.rule_sampling.sample_grid_rules`).

    The base itself (:func:`base_rule`) is always first; fewer are returned when the space
    holds fewer distinct architectures.
    """
    return sample_grid_rules(lambda r: json.dumps(arch_of(r, base), sort_keys=True), num,
                             grids, seed, first=base_rule(grids, base))


# ---------------------------------------------------------------------------- statistics
def kendall(x: Sequence[float], y: Sequence[float]) -> Dict[str, float]:
    """Kendall's tau-b and its p-value; nan with fewer than 2 points or a constant side."""
    res = stats.kendall_tau(x, y)
    return dict(tau=res.tau, p=res.p_value, n=res.n)


def proxy_scores(kappa: Sequence[float], length: Sequence[float]) -> Dict[str, List[float]]:
    """Per-architecture ranks and the combined As-ViT score (higher is better).

    ``rank_ntk``: 0 = lowest condition number; ``rank_length``: 0 = highest distortion;
    non-finite values rank last. ``combined = -(rank_ntk + rank_length)``.
    """
    r_ntk = stats.ranks(list(kappa), higher_is_better=False)
    r_ld = stats.ranks(list(length), higher_is_better=True)
    return dict(rank_ntk=r_ntk, rank_length=r_ld,
                combined=[-(a + b) for a, b in zip(r_ntk, r_ld)])


def predictors(records: Sequence[Mapping[str, Any]]) -> Dict[str, List[float]]:
    """What each predictor says per architecture, oriented as its tau is read.

    ``ntk_condition``: the rank order of kappa ascending (non-finite kappa counted as the
    largest), expected to fall with accuracy; ``length_distortion``: its rank order, expected
    to rise; ``combined``: the rank-sum score (:func:`proxy_scores`), expected to rise;
    ``params``: model size, for reference (only when every record has it).
    """
    sc = proxy_scores([r['ntk_condition'] for r in records],
                      [r['length_distortion'] for r in records])
    out = dict(ntk_condition=list(sc['rank_ntk']),
               length_distortion=[-v for v in sc['rank_length']], combined=sc['combined'])
    if all(r.get('params_m') is not None for r in records):
        out['params'] = [r['params_m'] for r in records]
    return out


def correlations(records: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Kendall tau (and p-value) of each of :func:`predictors` against each record's
    ``accuracy`` (the seed mean)."""
    acc = [r['accuracy'] for r in records]
    return {name: kendall(x, acc) for name, x in predictors(records).items()}


def _per_seed(records: Sequence[Mapping[str, Any]]) -> Tuple[List[int], List[List[float]]]:
    """The training seeds and, per seed, every record's top-1 (records share their seeds)."""
    seeds = list(records[0]['train_seeds']) if records else []
    return seeds, [[r['accuracies'][j] for r in records] for j in range(len(seeds))]


def seed_agreement(records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """How alike two training seeds rank the architectures
    (:func:`mmvitscale.experiments.stats.seed_agreement` of their top-1): the ceiling a proxy
    can reach against one short training."""
    seeds, per_seed = _per_seed(records)
    return stats.seed_agreement(per_seed, seeds)


def goal_verdict(combined: Mapping[str, Any], goal: float = GOAL_TAU) -> str:
    """``met`` when the combined tau's 95% interval lies at or above ``goal``, ``not met`` when
    it lies below, else ``inconclusive`` (also with no interval)."""
    low, high = combined.get('ci95', [math.nan, math.nan])
    if math.isfinite(low) and low >= goal:
        return 'met'
    if math.isfinite(high) and high < goal:
        return 'not met'
    return 'inconclusive'


def seeded_correlations(records: Sequence[Mapping[str, Any]], draws: int = BOOTSTRAP_DRAWS
                        ) -> Dict[str, Dict[str, Any]]:
    """Per predictor (:func:`predictors`), :func:`mmvitscale.experiments.stats.tau_over_seeds`
    against the records' per-seed top-1 (``accuracies``): tau / p / n against the seed mean, its
    95% bootstrap interval over architectures ``ci95`` (``draws``, seed 0) and ``per_seed``."""
    _, per_seed = _per_seed(records)
    return {name: stats.tau_over_seeds(x, per_seed, draws=draws, seed=0)
            for name, x in predictors(records).items()}


def within_groups(records: Sequence[Mapping[str, Any]], knob: str = 'patch_size',
                  draws: int = BOOTSTRAP_DRAWS) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """:func:`seeded_correlations` inside each value of one architecture knob (proxies
    re-ranked within the group): does the proxy order models beyond that one coarse factor?"""
    groups: Dict[str, List[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(f"{knob}={r['arch'][knob]}", []).append(r)
    return {k: seeded_correlations(v, draws=draws) for k, v in sorted(groups.items())}


# ---------------------------------------------------------------------------- one arch
TrainFn = Callable[[Rule, CorrelationSpec, str, int], Dict[str, Any]]
ProxyFn = Callable[[Rule, CorrelationSpec], Dict[str, float]]
# what a finished training / proxy score is announced with: (kind, rule index, train seed or
# None, its log record)
OnResult = Callable[[str, int, Optional[int], Dict[str, Any]], None]


def ensure_study_data(spec: CorrelationSpec) -> Dict[str, int]:
    """Lay out the Fashion-MNIST subsets :func:`train_arch` reads under ``spec.data_root``."""
    return ensure_data(get_task('cls'), spec.data_root, dict(train=spec.train, val=spec.val))


def train_arch(rule: Rule, spec: CorrelationSpec, work_dir: str, seed: int) -> Dict[str, Any]:
    """Train + test :data:`CONFIG` under ``rule`` with the stock Runner in ``work_dir``, seeded
    with ``seed`` (data order, augmentation, initialisation).

    Trained through :func:`~mmvitscale.experiments.runner.train_and_test` (resumes from its
    checkpoint when killed and run again). Returns top-1 % (``accuracy``), backbone
    ``params_m`` and ``train_s`` / ``eval_s``; checkpoints are deleted once it is tested.
    """
    from ..cost import count_params
    from ..engine.config import load_with_rule
    from .runner import remove_checkpoints, train_and_test
    os.makedirs(work_dir, exist_ok=True)
    rule_path = write_rule_file(osp.join(work_dir, 'rule.py'), rule,
                                header=['proxy_correlation sample'])
    cfg = load_with_rule(CONFIG, rule_path)
    size = dict(epochs=spec.epochs, train=spec.train, val=spec.val, batch=spec.batch)
    cfg = configure(cfg, get_task('cls'), size, seed, work_dir, spec.data_root,
                    loader_workers=spec.workers)
    # no stdout redirection: mmengine's logger keeps the stream it first saw, and a
    # per-run file would be closed under the next run (log level WARNING keeps it quiet)
    done = train_and_test(cfg)
    remove_checkpoints(work_dir)
    return dict(accuracy=float(done.metrics['accuracy/top1']),
                params_m=count_params(done.model.backbone) / 1e6,
                train_s=done.build_s + done.train_s, eval_s=done.eval_s)


def proxy_arch(rule: Rule, spec: CorrelationSpec) -> Dict[str, float]:
    """Both proxies of ``rule`` on :data:`BASE` (final LayerNorm off, see
    :mod:`mmvitscale.search.proxies`) and ``proxy_s``."""
    from ..search.rule_search import proxy_metrics
    t0 = time.perf_counter()
    out = proxy_metrics(BASE, rule, batch_size=spec.proxy_batch, num_inits=spec.proxy_inits,
                        num_points=spec.proxy_points, seed=spec.seed)
    return dict(ntk_condition=float(out['ntk_condition']),
                length_distortion=float(out['length_distortion']),
                proxy_s=time.perf_counter() - t0)


# ---------------------------------------------------------------------------- resume log
def log_key(key: str, settings: Mapping[str, Any]) -> str:
    """Resume-log identity of a record: its rule and the settings that decide it."""
    return key + ' ' + json.dumps(dict(settings), sort_keys=True)


def _record_key(rec: Mapping[str, Any]) -> str:
    settings = dict(rec.get('settings', {}), kind=rec.get('kind', 'train'))
    if 'train_seed' in rec:
        settings['train_seed'] = rec['train_seed']
    return log_key(rec['key'], settings)


def open_log(out_dir: str) -> ResultStore:
    """The resume log ``<out_dir>/runs.jsonl``; a torn last line (a killed run) is cut off, so
    the next record starts a fresh line."""
    return ResultStore(osp.join(out_dir, LOG_NAME), key_fn=_record_key, stamp=False)


def _new_record(kind: str, rule: Rule, spec: CorrelationSpec, seed: Optional[int]
                ) -> Dict[str, Any]:
    rec = dict(kind=kind, key=rule_key(rule), rule=rule, arch=arch_of(rule),
               settings=spec.proxy_settings() if kind == 'proxy' else spec.train_settings())
    if seed is not None:
        rec['train_seed'] = seed
    return rec


def _plan(rules: Sequence[Rule], spec: CorrelationSpec
          ) -> List[Tuple[str, int, Optional[int]]]:
    """(kind, rule index, seed) in run order: every proxy score, then trainings seed-major."""
    return ([('proxy', i, None) for i in range(len(rules))]
            + [('train', i, seed) for seed in spec.train_seeds for i in range(len(rules))])


def measure_archs(rules: Sequence[Rule], spec: CorrelationSpec, out_dir: str,
                  train_fn: TrainFn = train_arch, proxy_fn: ProxyFn = proxy_arch,
                  on_result: Optional[OnResult] = None,
                  on_start: Optional[Callable[[List[Tuple[str, int]]], None]] = None
                  ) -> Tuple[List[Dict[str, Any]], int]:
    """Score and train every rule, skipping what the resume log of ``out_dir`` already holds.

    First the proxies of every rule (one ``kind='proxy'`` record each), then one training per
    rule and seed, seed-major (all rules under the first seed, then the next), so a study cut
    short already holds whole seeds. Rule ``i`` under seed ``s`` trains in
    ``<out_dir>/runs/<i:03d>/seed<s>``. Each record (``kind``, ``key``, ``rule``, ``arch``,
    ``settings``, for trainings ``train_seed``, the fields of ``train_fn`` / ``proxy_fn`` and
    ``wall_s``) is appended to the log at once, then passed to ``on_result``. Before any work,
    ``on_start`` gets the ``(kind, rule index)`` of everything that will run, in order.

    Returns:
        One record per rule, in rule order (:func:`merge_records`), and how many trainings
        and proxy scores came from the log.
    """
    os.makedirs(out_dir, exist_ok=True)
    with owning_study(out_dir):  # one study per out dir: a second waits, then skips ours
        return _measure(rules, spec, out_dir, train_fn, proxy_fn, on_result, on_start)


def _measure(rules: Sequence[Rule], spec: CorrelationSpec, out_dir: str, train_fn: TrainFn,
             proxy_fn: ProxyFn, on_result: Optional[OnResult],
             on_start: Optional[Callable[[List[Tuple[str, int]]], None]]
             ) -> Tuple[List[Dict[str, Any]], int]:
    done = open_log(out_dir)
    skipped = 0
    plan = [(kind, i, seed, _new_record(kind, rules[i], spec, seed))
            for kind, i, seed in _plan(rules, spec)]
    if on_start is not None:
        on_start([(kind, i) for kind, i, _, rec in plan if _record_key(rec) not in done])

    proxies: List[Dict[str, Any]] = []
    trained: List[List[Dict[str, Any]]] = [[] for _ in rules]
    for kind, i, seed, rec in plan:
        prev = done.get(_record_key(rec))
        if prev is not None:
            skipped += 1
            rec = prev
        else:
            t0 = time.perf_counter()
            if kind == 'proxy':
                rec.update(proxy_fn(rules[i], spec))
            else:
                work_dir = osp.join(out_dir, 'runs', f'{i:03d}', f'seed{seed}')
                rec.update(train_fn(rules[i], spec, work_dir, seed))
            rec['wall_s'] = time.perf_counter() - t0
            done.append(rec)
            if on_result is not None:
                on_result(kind, i, seed, rec)
        if kind == 'proxy':
            proxies.append(rec)
        else:
            trained[i].append(rec)
    return [merge_records(p, t) for p, t in zip(proxies, trained)], skipped


def merge_records(proxy: Mapping[str, Any], trainings: Sequence[Mapping[str, Any]]
                  ) -> Dict[str, Any]:
    """One architecture's report row: its proxies, its per-seed top-1 (``train_seeds``,
    ``accuracies``), their mean ``accuracy`` with a 95% Student-t interval ``accuracy_ci95``
    (``nan`` bounds with one seed), ``params_m``, the mean ``train_s`` and ``wall_s`` (its
    proxy score and all its trainings, whenever they ran)."""
    acc = [float(t['accuracy']) for t in trainings]
    iv = stats.t_interval(acc)
    return dict(key=proxy['key'], rule=proxy['rule'], arch=proxy['arch'],
                ntk_condition=proxy['ntk_condition'],
                length_distortion=proxy['length_distortion'], proxy_s=proxy.get('proxy_s'),
                train_seeds=[t['train_seed'] for t in trainings], accuracies=acc,
                accuracy=iv.mean, accuracy_ci95=[iv.low, iv.high],
                params_m=trainings[0].get('params_m') if trainings else None,
                train_s=sum(t.get('train_s', 0.0) for t in trainings) / max(1, len(trainings)),
                wall_s=proxy.get('wall_s', 0.0) + sum(t.get('wall_s', 0.0) for t in trainings))


# ---------------------------------------------------------------------------- report

def study_meta(spec: CorrelationSpec, num_archs: int, command: str, wall_s: float,
               resumed: int, loadavg_start: Optional[str] = None,
               grids: Mapping[str, Sequence[Any]] = GRIDS) -> Dict[str, Any]:
    """The report's ``meta``: sizes, settings, command, torch version, load and this
    invocation's wall time (``loadavg_start`` defaults to the load now); ``resumed`` counts the
    trainings and proxy scores taken from the log."""
    from ..cost import cpu_name
    end = loadavg_text()
    return dict(num_archs=num_archs, grids={k: list(v) for k, v in grids.items()},
                threads=spec.threads, command=command, torch=torch.__version__, cpu=cpu_name(),
                loadavg_start=loadavg_start or end, loadavg_end=end, wall_s=wall_s,
                resumed=resumed, **spec.settings())


def build_report(records: Sequence[Mapping[str, Any]], meta: Dict[str, Any],
                 draws: int = BOOTSTRAP_DRAWS) -> Dict[str, Any]:
    """The study's report.

    ``correlation``: per predictor, tau / p / n against the seed-mean top-1, its 95% bootstrap
    interval over architectures ``ci95`` (:func:`mmvitscale.experiments.stats.
    kendall_interval`, ``draws`` resamples, seed 0) and ``per_seed`` (tau against each training
    seed's top-1 alone); ``seed_agreement`` (:func:`seed_agreement`); ``goal``
    (:func:`goal_verdict` of the combined rank); ``within_patch_size`` (the same inside each
    patch size); the ``runs``.
    """
    corr = seeded_correlations(records, draws=draws)
    return dict(meta=meta, correlation=corr, seed_agreement=seed_agreement(records),
                goal=dict(tau=GOAL_TAU, verdict=goal_verdict(corr.get('combined', {}))),
                within_patch_size=within_groups(records, draws=draws), runs=list(records))


def _ci_text(ci: Sequence[float]) -> str:
    return 'n/a' if not all(math.isfinite(v) for v in ci) else \
        f'{fmt_tau(ci[0])} to {fmt_tau(ci[1])}'


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: settings, tau tables with intervals, the seed-to-seed ceiling,
    the goal line and one row per architecture."""
    meta, corr = report['meta'], report['correlation']
    seeds = meta.get('train_seeds', [meta['seed']])
    k = len(seeds)
    lines = ['# Does the proxy predict accuracy?', '',
             f"{meta['num_archs']} architectures sampled (seed {meta['seed']}) around the "
             'Fashion-MNIST ViT base (embed 64, 6 layers, 2 heads, patch 4, 32 px) from '
             f"{', '.join(f'{k} {list(v)}' for k, v in meta['grids'].items())}; each trained "
             f"{meta['epochs']} epoch(s) on {meta['train']} images (batch {meta['batch']}, "
             f"{meta['threads']} thread) once per training seed {seeds}, top-1 on "
             f"{meta['val']} test images, averaged over the seeds. Proxies: batch "
             f"{meta['proxy_batch']}, {meta['proxy_inits']} init(s), {meta['proxy_points']} "
             f"circle points, no final LayerNorm, seed {meta['seed']}. Machine: "
             f"{meta.get('cpu', 'n/a')}, torch {meta['torch']}. Trainings and proxy scores "
             f"took {sum(r.get('wall_s', 0.0) for r in report['runs']):.0f} s in all; this "
             f"invocation {meta['wall_s']:.0f} s ({meta.get('resumed', 0)} of them taken from "
             f"the resume log), load average {meta['loadavg_start']} at start, "
             f"{meta['loadavg_end']} at end.", '',
             f"Command: `{meta['command']}`", '',
             'Kendall tau against the seed-mean top-1; the 95% interval is a percentile '
             'bootstrap over architectures; "per seed" is the tau against each training '
             "seed's top-1 alone.", '',
             '| predictor | expected sign | Kendall tau | 95% interval | p-value | per seed |',
             '|---|---|---|---|---|---|']
    expected = dict(ntk_condition='-', length_distortion='+', combined='+', params='+')
    names = dict(ntk_condition='NTK condition number', length_distortion='length distortion',
                 combined='combined rank (As-ViT rank sum)', params='params (reference)')
    for key, c in corr.items():
        p = 'n/a' if not math.isfinite(c['p']) else f"{c['p']:.3g}"
        per_seed = ', '.join(fmt_tau(t) for t in c.get('per_seed', []))
        lines.append(f'| {names[key]} | {expected[key]} | {fmt_tau(c["tau"])} | '
                     f'{_ci_text(c.get("ci95", [math.nan, math.nan]))} | {p} | {per_seed} |')
    agree = report.get('seed_agreement', {})
    if agree.get('pairs'):
        pairs = '; '.join(f"seeds {a['seeds'][0]} vs {a['seeds'][1]}: {fmt_tau(a['tau'])}"
                          for a in agree['pairs'])
        lines += ['', f"**Seed-to-seed ceiling:** two trainings of the same architectures rank "
                  f"them alike at Kendall tau {fmt_tau(agree['mean_tau'])} on average "
                  f"({pairs}). A proxy is not expected to agree with one training better than "
                  'another training does; the seed mean is less noisy than one seed.']
    within = report.get('within_patch_size', {})
    if within:
        lines += ['', 'Within one patch size (proxies re-ranked inside the group; patch size '
                  'alone splits both proxies and accuracy):', '',
                  '| group | n | tau NTK [95%] | tau length [95%] | tau combined [95%] | '
                  'tau params [95%] |', '|---|---|---|---|---|---|']

        def cell(c: Optional[Mapping[str, Any]]) -> str:
            if c is None:
                return 'n/a'
            return f"{fmt_tau(c['tau'])} [{_ci_text(c.get('ci95', [math.nan, math.nan]))}]"
        for group, c in within.items():
            lines.append(f"| {group} | {c['combined']['n']} | {cell(c['ntk_condition'])} | "
                         f"{cell(c['length_distortion'])} | {cell(c['combined'])} | "
                         f"{cell(c.get('params'))} |")
    comb = corr.get('combined', {})
    goal = report.get('goal', dict(tau=GOAL_TAU, verdict=goal_verdict(comb)))
    lines += ['', f"**Goal (combined tau >= {goal['tau']}): {goal['verdict']}** (measured "
              f"{fmt_tau(comb.get('tau', math.nan))}, 95% interval "
              f"{_ci_text(comb.get('ci95', [math.nan, math.nan]))}; met / not met only when "
              'the interval lies on one side of the goal).'
              + (' Compare the within-patch-size taus: a pooled tau carried by one coarse factor '
                 'does not show that the proxy ranks the architectures inside it.'
                 if within else ''), '',
              f"| # | rule | depth | width | heads | mlp | patch | params (M) | kappa | "
              f"length | top-1 % (mean{', 95% interval' if k > 1 else ''}) | per seed |",
              '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for i, r in enumerate(sorted(report['runs'], key=lambda r: -r['accuracy'])):
        a = r['arch']
        ci = r.get('accuracy_ci95', [math.nan, math.nan])
        acc = f"{r['accuracy']:.2f}"
        if all(math.isfinite(v) for v in ci):
            acc += f' [{ci[0]:.2f}, {ci[1]:.2f}]'
        per = ', '.join(f'{v:.2f}' for v in r.get('accuracies', [r['accuracy']]))
        lines.append(f"| {i + 1} | `{r['key']}` | {a['depth']} | {a['width']} | {a['heads']} "
                     f"| {a['mlp_ratio']:g} | {a['patch_size']} | {r['params_m']:.3f} | "
                     f"{r['ntk_condition']:.4g} | {r['length_distortion']:.4g} | {acc} | "
                     f"{per} |")
    return '\n'.join(lines) + '\n'


def plot(report: Mapping[str, Any], path: str) -> None:
    """Seed-mean accuracy (error bars: its 95% interval over the training seeds) against each
    proxy and the combined score (colour: depth), saved at ``path``."""
    plt = pyplot()
    runs, corr = report['runs'], report['correlation']
    acc = [r['accuracy'] for r in runs]
    err = [[r['accuracy'] - r.get('accuracy_ci95', [math.nan] * 2)[0] for r in runs],
           [r.get('accuracy_ci95', [math.nan] * 2)[1] - r['accuracy'] for r in runs]]
    has_err = all(math.isfinite(v) for side in err for v in side)
    sc = proxy_scores([r['ntk_condition'] for r in runs], [r['length_distortion'] for r in runs])
    kappa = [r['ntk_condition'] if math.isfinite(r['ntk_condition']) else float('nan')
             for r in runs]
    panels = [('ntk_condition', kappa, 'NTK condition number (log, lower better)', True),
              ('length_distortion', [r['length_distortion'] for r in runs],
               'length distortion (log, higher better)', True),
              ('combined', sc['combined'], '-(rank_ntk + rank_length) (higher better)', False)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, xs, label, log) in zip(axes, panels):
        if has_err:
            ax.errorbar(xs, acc, yerr=err, fmt='none', ecolor='0.6', elinewidth=0.8, zorder=1)
        ax.scatter(xs, acc, s=28, c=[r['arch']['depth'] for r in runs], cmap='viridis', zorder=2)
        if log:
            ax.set_xscale('log')
        ax.set_xlabel(label)
        ax.set_ylabel('top-1 % (seed mean)')
        ci = corr[key].get('ci95', [math.nan, math.nan])
        ax.set_title(f"{key}: Kendall tau {fmt_tau(corr[key]['tau'])} [{_ci_text(ci)}]",
                     fontsize=9)
        ax.grid(alpha=0.3)
    seeds = report['meta'].get('train_seeds', [report['meta'].get('seed')])
    fig.suptitle(f'{len(runs)} ViT architectures on Fashion-MNIST, {len(seeds)} training '
                 'seed(s) each (colour: depth; bars: 95% interval over seeds)', fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_report(report: Mapping[str, Any], out_dir: str) -> Dict[str, str]:
    """Write ``proxy_correlation.json``, ``.md`` and ``.png`` atomically; returns their paths."""
    stem = osp.join(out_dir, REPORT_STEM)
    paths = dict(json=stem + '.json', md=stem + '.md', png=stem + '.png')
    atomic_write(paths['json'], json.dumps(report, indent=2) + '\n')
    atomic_write(paths['md'], to_markdown(report))
    plot(report, paths['png'])
    return paths
