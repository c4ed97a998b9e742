"""Does the training-free proxy predict accuracy? The logic of ``tools/proxy_correlation.py``.

Samples distinct architectures of the scaling space :data:`GRIDS` around the Fashion-MNIST ViT
base :data:`BASE` of :data:`CONFIG` (:func:`sample_rules`), trains each briefly with mmengine's
stock Runner (:func:`train_arch`), scores it with the As-ViT proxies (:func:`proxy_arch`: NTK
condition number, lower is better; length distortion, higher is better; no final LayerNorm),
keeping every finished architecture in a resume log (:func:`measure_archs`), and reports
Kendall's tau of each proxy and of their combined rank (As-ViT rank sum) against top-1
(:func:`correlations`, :func:`build_report`, :func:`write_report`). Ranks and Kendall tau are
:mod:`mmvitscale.experiments.stats`'.
"""
import glob
import json
import math
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..fileio import atomic_write, pyplot, save_figure
from ..errors import InputError
from ..search.rule_sampling import sample_grid_rules
from ..search.scale_search import BaseSpec, write_rule_file
from . import stats
from .console import loadavg_text
from .store import ResultStore
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
# the settings that decide a run's result (its resume-log identity), in report order
SETTING_KEYS = ('train', 'val', 'epochs', 'batch', 'seed', 'proxy_batch', 'proxy_inits',
                'proxy_points')

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
        seed: sampling, training and proxy seed.
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
    threads: int = 1
    workers: int = 0
    proxy_batch: int = 8
    proxy_inits: int = 1
    proxy_points: int = 6
    data_root: str = field(default=osp.join(ROOT, 'data'))

    def settings(self) -> Dict[str, int]:
        """The training / proxy settings of a run (:data:`SETTING_KEYS`)."""
        return {k: getattr(self, k) for k in SETTING_KEYS}


def check_spec(spec: CorrelationSpec) -> None:
    """Check every input before any work.

    Raises:
        InputError: naming the first bad field (``num_archs``, ``train``, ``val``, ``epochs``,
            ``batch``, ``threads``, ``proxy_batch``, ``proxy_inits``, ``proxy_points``: must be
            >= 1; ``workers``: must be >= 0); ``detail`` is ``'must be >= 1, got N'`` /
            ``'must be >= 0'``.
    """
    for name in ('num_archs', 'train', 'val', 'epochs', 'batch', 'threads', 'proxy_batch',
                 'proxy_inits', 'proxy_points'):
        value = getattr(spec, name)
        if value < 1:
            raise InputError(name, f'must be >= 1, got {value}')
    if spec.workers < 0:
        raise InputError('workers', 'must be >= 0')


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


def correlations(records: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Kendall tau of each proxy and the combined rank against accuracy.

    ``ntk_condition``: tau of kappa itself (non-finite kappa counted as the largest), expected
    negative; ``length_distortion``: tau of the distortion, expected positive; ``combined``:
    tau of the rank-sum score, expected positive; ``params``: model size, for reference.
    """
    acc = [r['accuracy'] for r in records]
    sc = proxy_scores([r['ntk_condition'] for r in records],
                      [r['length_distortion'] for r in records])
    out = dict(ntk_condition=kendall(sc['rank_ntk'], acc),  # rank order of kappa ascending
               length_distortion=kendall([-v for v in sc['rank_length']], acc),
               combined=kendall(sc['combined'], acc))
    if all('params_m' in r for r in records):
        out['params'] = kendall([r['params_m'] for r in records], acc)
    return out


def within_groups(records: Sequence[Mapping[str, Any]], knob: str = 'patch_size'
                  ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """:func:`correlations` inside each value of one architecture knob (proxies re-ranked
    within the group): does the proxy order models beyond that one coarse factor?"""
    groups: Dict[str, List[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(f"{knob}={r['arch'][knob]}", []).append(r)
    return {k: correlations(v) for k, v in sorted(groups.items())}


# ---------------------------------------------------------------------------- one arch
TrainFn = Callable[[Rule, CorrelationSpec, str], Dict[str, Any]]
ProxyFn = Callable[[Rule, CorrelationSpec], Dict[str, float]]


def ensure_study_data(spec: CorrelationSpec) -> Dict[str, int]:
    """Lay out the Fashion-MNIST subsets :func:`train_arch` reads under ``spec.data_root``."""
    return ensure_data(get_task('cls'), spec.data_root, dict(train=spec.train, val=spec.val))


def train_arch(rule: Rule, spec: CorrelationSpec, work_dir: str) -> Dict[str, Any]:
    """Train + test :data:`CONFIG` under ``rule`` with the stock Runner in ``work_dir``.

    Returns top-1 % (``accuracy``), backbone ``params_m`` and ``train_s`` / ``eval_s``;
    checkpoints are deleted (nothing reuses them).
    """
    from mmengine.runner import Runner

    from ..cost import count_params
    from ..rules import load_with_rule
    os.makedirs(work_dir, exist_ok=True)
    rule_path = write_rule_file(osp.join(work_dir, 'rule.py'), rule,
                                header=['proxy_correlation sample'])
    cfg = load_with_rule(CONFIG, rule_path)
    size = dict(epochs=spec.epochs, train=spec.train, val=spec.val, batch=spec.batch)
    cfg = configure(cfg, get_task('cls'), size, spec.seed, work_dir, spec.data_root,
                    loader_workers=spec.workers)
    # no stdout redirection: mmengine's logger keeps the stream it first saw, and a
    # per-run file would be closed under the next run (log level WARNING keeps it quiet)
    t0 = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    runner.train()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = runner.test()
    eval_s = time.perf_counter() - t0
    for ckpt in glob.glob(osp.join(work_dir, '*.pth')):
        os.remove(ckpt)
    return dict(accuracy=float(metrics['accuracy/top1']),
                params_m=count_params(runner.model.backbone) / 1e6,
                train_s=train_s, eval_s=eval_s)


def proxy_arch(rule: Rule, spec: CorrelationSpec) -> Dict[str, float]:
    """Both proxies of ``rule`` on :data:`BASE` (final LayerNorm off, see
    :mod:`mmvitscale.search.proxies`) and ``proxy_s``."""
    from ..search.scale_search import proxy_metrics
    t0 = time.perf_counter()
    out = proxy_metrics(BASE, rule, batch_size=spec.proxy_batch, num_inits=spec.proxy_inits,
                        num_points=spec.proxy_points, seed=spec.seed)
    return dict(ntk_condition=float(out['ntk_condition']),
                length_distortion=float(out['length_distortion']),
                proxy_s=time.perf_counter() - t0)


# ---------------------------------------------------------------------------- resume log
def log_key(key: str, settings: Mapping[str, Any]) -> str:
    """Resume-log identity of a run: its rule and its training / proxy settings."""
    return key + ' ' + json.dumps(dict(settings), sort_keys=True)


def open_log(out_dir: str) -> ResultStore:
    """The resume log ``<out_dir>/runs.jsonl``; a torn last line (a killed run) is cut off, so
    the next record starts a fresh line."""
    return ResultStore(osp.join(out_dir, LOG_NAME),
                       key_fn=lambda r: log_key(r['key'], r.get('settings', {})), stamp=False)


def measure_archs(rules: Sequence[Rule], spec: CorrelationSpec, out_dir: str,
                  train_fn: TrainFn = train_arch, proxy_fn: ProxyFn = proxy_arch,
                  on_result: Optional[Callable[[int, int, Dict[str, Any]], None]] = None
                  ) -> Tuple[List[Dict[str, Any]], int]:
    """Train and score every rule not yet in the resume log of ``out_dir``.

    Rule ``i`` trains in ``<out_dir>/runs/<i:03d>``; each finished record (``key``, ``rule``,
    ``arch``, ``settings``, the fields of ``train_fn`` and ``proxy_fn``, ``arch_s``) is appended
    to the log at once, then passed to ``on_result(i, len(rules), record)``. Records already
    logged under the same rule and :meth:`CorrelationSpec.settings` are reused.

    Returns:
        The records in rule order, and how many came from the log.
    """
    os.makedirs(out_dir, exist_ok=True)
    done = open_log(out_dir)
    settings = spec.settings()
    records, skipped = [], 0
    for i, rule in enumerate(rules):
        key = rule_key(rule)
        prev = done.get(log_key(key, settings))
        if prev is not None:
            records.append(prev)
            skipped += 1
            continue
        arch = arch_of(rule)
        t0 = time.perf_counter()
        trained = train_fn(rule, spec, osp.join(out_dir, 'runs', f'{i:03d}'))
        proxies = proxy_fn(rule, spec)
        rec = dict(key=key, rule=rule, arch=arch, settings=settings, **trained, **proxies,
                   arch_s=time.perf_counter() - t0)
        done.append(rec)
        records.append(rec)
        if on_result is not None:
            on_result(i, len(rules), rec)
    return records, skipped


# ---------------------------------------------------------------------------- report
def fmt_tau(v: float) -> str:
    """A tau as ``+0.123``, or ``n/a`` when not finite."""
    return 'n/a' if not math.isfinite(v) else f'{v:+.3f}'


def study_meta(spec: CorrelationSpec, num_archs: int, command: str, wall_s: float,
               resumed: int, loadavg_start: Optional[str] = None,
               grids: Mapping[str, Sequence[Any]] = GRIDS) -> Dict[str, Any]:
    """The report's ``meta``: sizes, settings, command, torch version, load and wall time
    (``loadavg_start`` defaults to the load now)."""
    end = loadavg_text()
    return dict(num_archs=num_archs, grids={k: list(v) for k, v in grids.items()},
                threads=spec.threads, command=command, torch=torch.__version__,
                loadavg_start=loadavg_start or end, loadavg_end=end, wall_s=wall_s,
                resumed=resumed, **spec.settings())


def build_report(records: Sequence[Mapping[str, Any]], meta: Dict[str, Any]) -> Dict[str, Any]:
    """``meta``, pooled and within-patch-size correlations, and the runs."""
    return dict(meta=meta, correlation=correlations(records),
                within_patch_size=within_groups(records), runs=list(records))


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: settings, tau tables, goal line and one row per run."""
    meta, corr = report['meta'], report['correlation']
    lines = ['# Does the proxy predict accuracy?', '',
             f"{meta['num_archs']} architectures sampled (seed {meta['seed']}) around the "
             'Fashion-MNIST ViT base (embed 64, 6 layers, 2 heads, patch 4, 32 px) from '
             f"{', '.join(f'{k} {list(v)}' for k, v in meta['grids'].items())}; each trained "
             f"{meta['epochs']} epoch(s) on {meta['train']} images (batch {meta['batch']}, "
             f"{meta['threads']} thread), top-1 on {meta['val']} test images. Proxies: batch "
             f"{meta['proxy_batch']}, {meta['proxy_inits']} init(s), {meta['proxy_points']} "
             f"circle points, no final LayerNorm. Wall time {meta['wall_s']:.0f} s; load "
             f"average {meta['loadavg_start']} at start, {meta['loadavg_end']} at end.", '',
             f"Command: `{meta['command']}`", '',
             '| predictor | expected sign | Kendall tau | p-value |', '|---|---|---|---|']
    expected = dict(ntk_condition='-', length_distortion='+', combined='+', params='+')
    names = dict(ntk_condition='NTK condition number', length_distortion='length distortion',
                 combined='combined rank (As-ViT rank sum)', params='params (reference)')
    for key, c in corr.items():
        p = 'n/a' if not math.isfinite(c['p']) else f"{c['p']:.3g}"
        lines.append(f'| {names[key]} | {expected[key]} | {fmt_tau(c["tau"])} | {p} |')
    within = report.get('within_patch_size', {})
    if within:
        lines += ['', 'Within one patch size (proxies re-ranked inside the group; patch size '
                  'alone splits both proxies and accuracy):', '',
                  '| group | n | tau NTK | tau length | tau combined | tau params |',
                  '|---|---|---|---|---|---|']
        for group, c in within.items():
            lines.append(f"| {group} | {c['combined']['n']} | "
                         f"{fmt_tau(c['ntk_condition']['tau'])}"
                         f" | {fmt_tau(c['length_distortion']['tau'])} | "
                         f"{fmt_tau(c['combined']['tau'])} | "
                         f"{fmt_tau(c.get('params', {}).get('tau', float('nan')))} |")
    tau = corr.get('combined', {}).get('tau', float('nan'))
    ok = math.isfinite(tau) and tau >= 0.5
    lines += ['', f"**Goal (combined tau >= 0.5): {'met' if ok else 'not met'}** "
              f'(measured {fmt_tau(tau)}). One seed and a very short schedule: accuracy itself '
              'is noisy at this budget, which caps any achievable tau.'
              + (' Compare the within-patch-size taus: a pooled tau carried by one coarse factor '
                 'does not show that the proxy ranks the architectures inside it.'
                 if within else ''), '',
              '| # | rule | depth | width | heads | mlp | patch | params (M) | kappa | '
              'length | top-1 % |', '|---|---|---|---|---|---|---|---|---|---|---|']
    for i, r in enumerate(sorted(report['runs'], key=lambda r: -r['accuracy'])):
        a = r['arch']
        lines.append(f"| {i + 1} | `{r['key']}` | {a['depth']} | {a['width']} | {a['heads']} "
                     f"| {a['mlp_ratio']:g} | {a['patch_size']} | {r['params_m']:.3f} | "
                     f"{r['ntk_condition']:.4g} | {r['length_distortion']:.4g} | "
                     f"{r['accuracy']:.2f} |")
    return '\n'.join(lines) + '\n'


def plot(report: Mapping[str, Any], path: str) -> None:
    """Accuracy against each proxy and the combined score (colour: depth), saved at ``path``."""
    plt = pyplot()
    runs, corr = report['runs'], report['correlation']
    acc = [r['accuracy'] for r in runs]
    sc = proxy_scores([r['ntk_condition'] for r in runs], [r['length_distortion'] for r in runs])
    kappa = [r['ntk_condition'] if math.isfinite(r['ntk_condition']) else float('nan')
             for r in runs]
    panels = [('ntk_condition', kappa, 'NTK condition number (log, lower better)', True),
              ('length_distortion', [r['length_distortion'] for r in runs],
               'length distortion (log, higher better)', True),
              ('combined', sc['combined'], '-(rank_ntk + rank_length) (higher better)', False)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, xs, label, log) in zip(axes, panels):
        ax.scatter(xs, acc, s=28, c=[r['arch']['depth'] for r in runs], cmap='viridis')
        if log:
            ax.set_xscale('log')
        ax.set_xlabel(label)
        ax.set_ylabel('top-1 %')
        ax.set_title(f"{key}: Kendall tau {fmt_tau(corr[key]['tau'])}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f'{len(runs)} ViT architectures on Fashion-MNIST (colour: depth)', fontsize=10)
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
