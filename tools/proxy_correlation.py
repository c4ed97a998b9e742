"""Does the training-free proxy predict accuracy? (issue 6)

    python tools/proxy_correlation.py [--num-archs 30] [--train 4000] [--val 1000]
        [--epochs 2] [--out-dir work_dirs/proxy_correlation] [--seed 0]

Samples ``--num-archs`` distinct architectures of the scaling space around the Fashion-MNIST
ViT base of ``configs/cls/scaled_vit_fmnist.py`` (embed 64, 6 layers, 2 heads, patch 4, 32 px;
resolution kept at 32), trains each briefly with mmengine's stock Runner (the config loaded
under a per-architecture rule file with :func:`mmvitscale.rules.load_with_rule`, on a subset,
seeded, 1 thread), scores it with the As-ViT proxies (NTK condition number, lower is better;
length distortion, higher is better; on a backbone without the final LayerNorm) and reports
Kendall's tau of each proxy and of their combined rank (As-ViT style rank sum) against the
top-1 accuracy.

Resumable: each finished architecture is appended to ``runs.jsonl`` in ``--out-dir``; a rerun
skips the architectures already there. Writes ``proxy_correlation.json``, ``.md`` and ``.png``
(atomically) to ``--out-dir``.
"""
import argparse
import glob
import itertools
import json
import math
import os
import os.path as osp
import random
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import mmvitscale  # noqa: F401  (stack shims + registries, before any host import)
import torch

from mmvitscale.experiments import stats  # noqa: E402
from mmvitscale.experiments import ResultStore  # noqa: E402
from mmvitscale.experiments.console import Stages  # noqa: E402
from mmvitscale.experiments.console import clock as _clock  # noqa: E402
from mmvitscale.experiments.console import loadavg_text as _loadavg  # noqa: E402
from mmvitscale.experiments.tasks import configure, ensure_data, get_task  # noqa: E402
from mmvitscale.fileio import atomic_write, save_figure  # noqa: E402
from mmvitscale.search.scale_search import BaseSpec, ranks, write_rule_file  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'cls', 'scaled_vit_fmnist.py')
# the config's task base (kept in step with configs/cls/scaled_vit_fmnist.py)
BASE = BaseSpec(family='vit', arch=dict(embed_dims=64, num_layers=6, num_heads=2, mlp_ratio=4.0),
                img_size=32, patch_size=4, in_channels=1)
GRIDS: Dict[str, Sequence[Any]] = dict(
    depth_mult=(0.5, 1.0, 1.5), width_mult=(0.5, 0.75, 1.0, 1.25), heads=(1, 2, 4),
    mlp_ratio_mult=(0.5, 1.0), patch_size=(4, 8))
LOG_NAME = 'runs.jsonl'

TrainFn = Callable[[Dict[str, Any], argparse.Namespace, str], Dict[str, Any]]
ProxyFn = Callable[[Dict[str, Any], argparse.Namespace], Dict[str, float]]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--num-archs', type=int, default=30, help='architectures to sample')
    parser.add_argument('--train', type=int, default=4000, help='training images (first N)')
    parser.add_argument('--val', type=int, default=1000, help='test images (first N)')
    parser.add_argument('--epochs', type=int, default=2, help='training epochs per arch')
    parser.add_argument('--batch', type=int, default=64, help='training batch size')
    parser.add_argument('--out-dir', default='work_dirs/proxy_correlation', help='report folder')
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data'),
                        help='folder holding fashion_mnist/')
    parser.add_argument('--seed', type=int, default=0, help='sampling, training and proxy seed')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--workers', type=int, default=0, help='data loader workers')
    parser.add_argument('--proxy-batch', type=int, default=8, help='NTK batch size')
    parser.add_argument('--proxy-inits', type=int, default=1, help='proxy initialisations')
    parser.add_argument('--proxy-points', type=int, default=6,
                        help='length-distortion circle points')
    args = parser.parse_args(argv)
    for key in ('num_archs', 'train', 'val', 'epochs', 'batch', 'threads', 'proxy_batch',
                'proxy_inits', 'proxy_points'):
        if getattr(args, key) < 1:
            parser.error(f'--{key.replace("_", "-")} must be >= 1, got {getattr(args, key)}')
    if args.workers < 0:
        parser.error('--workers must be >= 0')
    return args


# ---------------------------------------------------------------------------- sampling
def rule_key(rule: Mapping[str, Any]) -> str:
    """Canonical text of a rule (the resume log's key)."""
    return json.dumps(dict(sorted(rule.items())), sort_keys=True)


def arch_of(rule: Mapping[str, Any], base: BaseSpec = BASE) -> Dict[str, Any]:
    spec = base.resolve(rule)
    return dict(depth=spec.num_layers, width=spec.embed_dims, heads=spec.num_heads,
                mlp_ratio=spec.mlp_ratio, patch_size=spec.patch_size,
                img_size=list(spec.img_size))


def sample_rules(num: int, seed: int = 0, grids: Mapping[str, Sequence[Any]] = GRIDS,
                 base: BaseSpec = BASE) -> List[Dict[str, Any]]:
    """``num`` rules of distinct resolved architectures, drawn without replacement (seeded).

    The base itself (the empty-effect rule) is always first; fewer are returned when the
    space holds fewer distinct architectures.
    """
    keys = list(grids)
    space = [dict(zip(keys, values)) for values in itertools.product(*grids.values())]
    random.Random(seed).shuffle(space)
    base_rule = {k: (base.arch['num_heads'] if k == 'heads' else
                     base.patch_size if k == 'patch_size' else 1.0) for k in keys}
    space = [base_rule] + [r for r in space if r != base_rule]
    out, seen = [], set()
    for rule in space:
        try:
            arch = json.dumps(arch_of(rule, base), sort_keys=True)
        except ValueError:  # not buildable (e.g. width rounds to 0)
            continue
        if arch in seen:
            continue
        seen.add(arch)
        out.append(rule)
        if len(out) == num:
            break
    return out


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
    r_ntk = ranks(list(kappa), higher_is_better=False)
    r_ld = ranks(list(length), higher_is_better=True)
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


# ---------------------------------------------------------------------------- resume log
def log_key(key: str, settings: Mapping[str, Any]) -> str:
    """Resume-log identity of a run: its rule and its training / proxy settings."""
    return key + ' ' + json.dumps(dict(settings), sort_keys=True)


# ---------------------------------------------------------------------------- one arch
def train_arch(rule: Dict[str, Any], args: argparse.Namespace, work_dir: str) -> Dict[str, Any]:
    """Train + test the config under ``rule`` with the stock Runner; top-1 % and timings."""
    from mmengine.runner import Runner

    from mmvitscale.cost import count_params
    from mmvitscale.rules import load_with_rule
    os.makedirs(work_dir, exist_ok=True)
    rule_path = write_rule_file(osp.join(work_dir, 'rule.py'), rule,
                                header=['proxy_correlation sample'])
    cfg = load_with_rule(CONFIG, rule_path)
    size = dict(epochs=args.epochs, train=args.train, val=args.val, batch=args.batch)
    cfg = configure(cfg, get_task('cls'), size, args.seed, work_dir, args.data_root,
                    loader_workers=args.workers)
    # no stdout redirection: mmengine's logger keeps the stream it first saw, and a
    # per-run file would be closed under the next run (log level WARNING keeps it quiet)
    t0 = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    runner.train()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = runner.test()
    eval_s = time.perf_counter() - t0
    for ckpt in glob.glob(osp.join(work_dir, '*.pth')):  # nothing reuses them
        os.remove(ckpt)
    return dict(accuracy=float(metrics['accuracy/top1']),
                params_m=count_params(runner.model.backbone) / 1e6,
                train_s=train_s, eval_s=eval_s)


def proxy_arch(rule: Dict[str, Any], args: argparse.Namespace) -> Dict[str, float]:
    """Both proxies of ``rule`` (final LayerNorm off, see mmvitscale.search.proxies)."""
    from mmvitscale.search.scale_search import proxy_metrics
    t0 = time.perf_counter()
    out = proxy_metrics(BASE, rule, batch_size=args.proxy_batch, num_inits=args.proxy_inits,
                        num_points=args.proxy_points, seed=args.seed)
    return dict(ntk_condition=float(out['ntk_condition']),
                length_distortion=float(out['length_distortion']),
                proxy_s=time.perf_counter() - t0)


# ---------------------------------------------------------------------------- report
def _fmt(v: float) -> str:
    return 'n/a' if not math.isfinite(v) else f'{v:+.3f}'


def to_markdown(report: Mapping[str, Any]) -> str:
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
        lines.append(f'| {names[key]} | {expected[key]} | {_fmt(c["tau"])} | {p} |')
    within = report.get('within_patch_size', {})
    if within:
        lines += ['', 'Within one patch size (proxies re-ranked inside the group; patch size '
                  'alone splits both proxies and accuracy):', '',
                  '| group | n | tau NTK | tau length | tau combined | tau params |',
                  '|---|---|---|---|---|---|']
        for group, c in within.items():
            lines.append(f"| {group} | {c['combined']['n']} | {_fmt(c['ntk_condition']['tau'])}"
                         f" | {_fmt(c['length_distortion']['tau'])} | "
                         f"{_fmt(c['combined']['tau'])} | "
                         f"{_fmt(c.get('params', {}).get('tau', float('nan')))} |")
    tau = corr.get('combined', {}).get('tau', float('nan'))
    ok = math.isfinite(tau) and tau >= 0.5
    lines += ['', f"**Goal (combined tau >= 0.5): {'met' if ok else 'not met'}** "
              f'(measured {_fmt(tau)}). One seed and a very short schedule: accuracy itself '
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
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
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
        ax.set_title(f"{key}: Kendall tau {_fmt(corr[key]['tau'])}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f'{len(runs)} ViT architectures on Fashion-MNIST (colour: depth)', fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def within_groups(records: Sequence[Mapping[str, Any]], knob: str = 'patch_size'
                  ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """:func:`correlations` inside each value of one architecture knob (proxies re-ranked
    within the group): does the proxy order models beyond that one coarse factor?"""
    groups: Dict[str, List[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(f"{knob}={r['arch'][knob]}", []).append(r)
    return {k: correlations(v) for k, v in sorted(groups.items())}


def build_report(records: Sequence[Mapping[str, Any]], meta: Dict[str, Any]) -> Dict[str, Any]:
    return dict(meta=meta, correlation=correlations(records),
                within_patch_size=within_groups(records), runs=list(records))


def write_report(report: Mapping[str, Any], out_dir: str) -> None:
    stem = osp.join(out_dir, 'proxy_correlation')
    atomic_write(stem + '.json', json.dumps(report, indent=2) + '\n')
    atomic_write(stem + '.md', to_markdown(report))
    plot(report, stem + '.png')


# ---------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None, train_fn: TrainFn = train_arch,
         proxy_fn: ProxyFn = proxy_arch, stages: Optional[Stages] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    args.out_dir, args.data_root = osp.abspath(args.out_dir), osp.abspath(args.data_root)
    torch.set_num_threads(args.threads)
    stages = stages or Stages()
    say = stages.console.print
    os.makedirs(args.out_dir, exist_ok=True)
    if train_fn is train_arch:
        with stages.stage(f'data under {args.data_root}'):
            ensure_data(get_task('cls'), args.data_root, dict(train=args.train, val=args.val))
    rules = sample_rules(args.num_archs, args.seed)
    if len(rules) < args.num_archs:
        say(f'only {len(rules)} distinct architectures in the space')
    log_path = osp.join(args.out_dir, LOG_NAME)
    # a torn last line (a killed run) is cut off, so the next record starts a fresh line
    done = ResultStore(log_path, key_fn=lambda r: log_key(r['key'], r.get('settings', {})),
                       stamp=False)
    settings = dict(train=args.train, val=args.val, epochs=args.epochs, batch=args.batch,
                    seed=args.seed, proxy_batch=args.proxy_batch,
                    proxy_inits=args.proxy_inits, proxy_points=args.proxy_points)
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
        work_dir = osp.join(args.out_dir, 'runs', f'{i:03d}')
        trained = train_fn(rule, args, work_dir)
        proxies = proxy_fn(rule, args)
        rec = dict(key=key, rule=rule, arch=arch, settings=settings, **trained, **proxies,
                   arch_s=time.perf_counter() - t0)
        done.append(rec)
        records.append(rec)
        say(f'[{_clock(stages.elapsed())}] arch {i + 1}/{len(rules)} d{arch["depth"]} '
            f'w{arch["width"]} h{arch["heads"]} mlp{arch["mlp_ratio"]:g} p{arch["patch_size"]}: '
            f'top-1 {rec["accuracy"]:.2f}%, kappa {rec["ntk_condition"]:.3g}, length '
            f'{rec["length_distortion"]:.3g} ({rec["arch_s"]:.1f}s)')
    if skipped:
        say(f'[{_clock(stages.elapsed())}] resumed: {skipped} architecture(s) from {log_path}')
    command = ' '.join(['python tools/proxy_correlation.py',
                        *(argv if argv is not None else sys.argv[1:])])
    meta = dict(num_archs=len(records), grids={k: list(v) for k, v in GRIDS.items()},
                threads=args.threads, command=command,
                torch=torch.__version__, loadavg_start=None, loadavg_end=_loadavg(),
                wall_s=stages.elapsed(), resumed=skipped, **settings)
    meta['loadavg_start'] = getattr(stages, 'loadavg_start', None) or meta['loadavg_end']
    report = build_report(records, meta)
    write_report(report, args.out_dir)
    for key, c in report['correlation'].items():
        say(f'[{_clock(stages.elapsed())}] Kendall tau {key:18s} {_fmt(c["tau"])} '
            f'(p {c["p"]:.3g}, n {c["n"]})')
    for group, c in report['within_patch_size'].items():
        say(f'[{_clock(stages.elapsed())}] within {group} (n {c["combined"]["n"]}): tau ntk '
            f'{_fmt(c["ntk_condition"]["tau"])}, length {_fmt(c["length_distortion"]["tau"])}, '
            f'combined {_fmt(c["combined"]["tau"])}')
    say(f'[{_clock(stages.elapsed())}] wrote {args.out_dir}/proxy_correlation.json, .md, .png')
    return report


if __name__ == '__main__':
    _stages = Stages()
    _stages.loadavg_start = _loadavg()
    main(stages=_stages)
