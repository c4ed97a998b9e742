"""Scaling-transfer report: does a scaling rule beat the baseline shape at equal cost?

    python tools/transfer.py [--rule configs/_base_/scaling/deeper_narrower.py]
        [--baseline configs/_base_/scaling/deit_tiny_shape.py] [--tasks cls det video]
        [--out-dir work_dirs/transfer] [--epochs N] [--cls-train N] [--det-epochs N] ...

For each task (the three offline configs) and each rule (baseline, rule) it loads the task
config under that rule (:func:`mmvitscale.rules.load_with_rule`), trains it with mmengine's
Runner on a subset of the offline data (generated first when missing), evaluates it, counts
the backbone's FLOPs (MACs, attention counted) and params at the task's input shape and
measures the backbone's CPU latency at batch 1. Writes ``transfer.json``, ``transfer.md`` and
``transfer.png`` to ``--out-dir``.

Verdict per task: the rule *transferred* when its metric beats the baseline's by more than
``--margin`` points at equal cost (backbone FLOPs within ``--tolerance`` of the baseline's);
it *did not transfer* otherwise; with FLOPs further apart the pair is *not comparable*.
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import mmvitscale  # noqa: F401  (stack shims + registries, before any host import)
import torch
from mmengine.config import Config
from rich.console import Console
from torch import nn

from mmvitscale.cost import cpu_name
from mmvitscale.fileio import atomic_write, save_figure
from mmvitscale.rules import load_with_rule

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCALING = osp.join(ROOT, 'configs', '_base_', 'scaling')
DEFAULT_RULE = osp.join(SCALING, 'deeper_narrower.py')
DEFAULT_BASELINE = osp.join(SCALING, 'deit_tiny_shape.py')


@dataclass(frozen=True)
class Task:
    """One offline task: its config, data folder, metric and default experiment size."""

    config: str
    data_dir: str
    metric: str
    metric_scale: float  # to percent
    chance: Optional[float]  # percent; None where chance is not a meaningful number
    unit: str  # what one training sample is
    epochs: int
    train: int
    val: int
    batch: Optional[int] = None  # None: the config's


TASKS: Dict[str, Task] = {
    'cls': Task('configs/cls/scaled_vit_fmnist.py', 'fashion_mnist', 'accuracy/top1', 1.0,
                10.0, 'images', epochs=3, train=6000, val=2000, batch=32),
    'det': Task('configs/det/scaled_vit_retina_fmnist.py', 'fmnist_det', 'coco/bbox_mAP', 100.0,
                None, 'canvases', epochs=4, train=1000, val=300),
    'video': Task('configs/video/scaled_vit_fmnist_video.py', 'fmnist_video', 'acc/top1', 100.0,
                  12.5, 'clips', epochs=8, train=2000, val=500),
}
METRIC_LABEL = {'cls': 'top-1 %', 'det': 'bbox mAP x100', 'video': 'top-1 %'}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--rule', default=DEFAULT_RULE, help='scaling rule file to test')
    parser.add_argument('--baseline', default=DEFAULT_BASELINE, help='baseline rule file')
    parser.add_argument('--tasks', nargs='+', choices=sorted(TASKS), default=list(TASKS),
                        help='tasks to run')
    parser.add_argument('--out-dir', default='work_dirs/transfer', help='report folder')
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data'),
                        help='folder holding fashion_mnist/, fmnist_det/, fmnist_video/')
    parser.add_argument('--epochs', type=int, default=None,
                        help='training epochs for every task (overrides --TASK-epochs)')
    for name, task in TASKS.items():
        parser.add_argument(f'--{name}-epochs', type=int, default=task.epochs,
                            help=f'{name}: training epochs')
        parser.add_argument(f'--{name}-train', type=int, default=task.train,
                            help=f'{name}: training {task.unit} (first N of the train split)')
        parser.add_argument(f'--{name}-val', type=int, default=task.val,
                            help=f'{name}: evaluation {task.unit} (first N of the val split)')
        parser.add_argument(f'--{name}-batch', type=int, default=task.batch,
                            help=f'{name}: training batch size (default: the config\'s)')
    parser.add_argument('--tolerance', type=float, default=0.15,
                        help='equal cost: backbone FLOPs within this fraction of the baseline')
    parser.add_argument('--margin', type=float, default=0.0,
                        help='metric points the rule must gain over the baseline to count')
    parser.add_argument('--det-score-thr', type=float, default=0.01,
                        help='detection test score threshold (low: short runs still score)')
    parser.add_argument('--workers', type=int, default=0, help='data loader workers')
    parser.add_argument('--seed', type=int, default=0, help='seed of every run')
    parser.add_argument('--latency-repeats', type=int, default=10,
                        help='timed runs per model and round')
    parser.add_argument('--latency-rounds', type=int, default=5,
                        help='rounds alternating baseline and rule (fair under varying load)')
    parser.add_argument('--latency-warmup', type=float, default=0.2,
                        help='warm-up seconds per model and round')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads for training and latency (1: steady on a shared '
                        'CPU; these small models gain little from more)')
    return parser.parse_args(argv)


def settings(args: argparse.Namespace, name: str) -> Dict[str, int]:
    """Epochs / train / val sizes of one task after the command-line overrides."""
    epochs = args.epochs if args.epochs is not None else getattr(args, f'{name}_epochs')
    return dict(epochs=epochs, train=getattr(args, f'{name}_train'),
                val=getattr(args, f'{name}_val'), batch=getattr(args, f'{name}_batch'))


def check_args(args: argparse.Namespace) -> Dict[str, Dict[str, Config]]:
    """Validate everything cheap to validate; return the loaded configs per task and run.

    Raises SystemExit with a clear message before any training or data generation.
    """
    for path, flag in ((args.rule, '--rule'), (args.baseline, '--baseline')):
        if not osp.isfile(path):
            raise SystemExit(f'transfer.py: error: {flag} {path}: rule file not found')
    for name in args.tasks:
        for key, value in settings(args, name).items():
            if value is not None and value < 1:
                raise SystemExit(f'transfer.py: error: {name} {key} must be >= 1, got {value}')
    if args.tolerance < 0 or args.margin < 0:
        raise SystemExit('transfer.py: error: --tolerance and --margin must be >= 0')
    if min(args.latency_repeats, args.latency_rounds, args.threads) < 1 or args.workers < 0:
        raise SystemExit('transfer.py: error: --latency-repeats, --latency-rounds and --threads '
                         'must be >= 1, --workers >= 0')
    configs = {}
    for name in dict.fromkeys(args.tasks):
        path = osp.join(ROOT, TASKS[name].config)
        try:
            configs[name] = {'baseline': load_with_rule(path, args.baseline),
                             'rule': load_with_rule(path, args.rule)}
        except ValueError as err:
            raise SystemExit(f'transfer.py: error: {err}') from err
    return configs


class Stages:
    """One console line per stage: what starts, then how long it took and the total so far."""

    def __init__(self, console: Optional[Console] = None) -> None:
        # bound to the real stdout now: runs redirect sys.stdout to their log files
        self.console = console or Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextlib.contextmanager
    def stage(self, what: str) -> Iterator[None]:
        self.console.print(f'[{_clock(self.elapsed())}] {what} ...')
        t0 = time.perf_counter()
        yield
        self.console.print(f'[{_clock(self.elapsed())}]   done in {time.perf_counter() - t0:.1f}s')


def _clock(seconds: float) -> str:
    return f'{int(seconds // 60):2d}:{seconds % 60:04.1f}'


# ----------------------------------------------------------------------------------------------
# data


def ensure_data(name: str, root: str, size: Dict[str, int]) -> Dict[str, int]:
    """Generate the task's offline data when missing (else verify it); return split sizes."""
    from mmvitscale import datasets
    out = osp.join(root, TASKS[name].data_dir)
    manifest_path = osp.join(out, datasets.MANIFEST)
    params: Dict[str, Any] = {}
    if osp.isfile(manifest_path):  # keep whatever valid dataset is there (verified below)
        with open(manifest_path, encoding='utf-8') as f:
            params = json.load(f).get('params', {})
    try:
        if name == 'cls':
            manifest = datasets.prepare_classification(out)
            counts = dict(train=manifest['counts']['train'], val=manifest['counts']['test'])
        else:
            gen = datasets.generate_det if name == 'det' else datasets.generate_video
            if not params:
                params = dict(num_train=max(2000, size['train']), num_val=max(500, size['val']))
            manifest = gen(out, **params, show_progress=False)
            key = 'images' if name == 'det' else 'clips'
            counts = {s: manifest['counts'][s][key] for s in ('train', 'val')}
    except (datasets.DatasetError, datasets.FashionMNISTNotFoundError, ValueError) as err:
        raise SystemExit(f'transfer.py: error: {name} data at {out}: {err}') from err
    for split in ('train', 'val'):
        if size[split] > counts[split]:
            raise SystemExit(f'transfer.py: error: --{name}-{split} {size[split]} exceeds the '
                             f'{counts[split]} {TASKS[name].unit} of {out} ({split})')
    return counts


def coco_subset(src: str, dst: str, n: int) -> str:
    """COCO annotation file with the first ``n`` images of ``src`` (``src`` if it has <= n)."""
    with open(src, encoding='utf-8') as f:
        coco = json.load(f)
    if len(coco['images']) <= n:
        return src
    coco['images'] = coco['images'][:n]
    keep = {img['id'] for img in coco['images']}
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in keep]
    atomic_write(dst, json.dumps(coco))
    return dst


# ----------------------------------------------------------------------------------------------
# one run


def _fit_schedule(schedulers: Any, epochs: int, iters_per_epoch: int) -> List[dict]:
    """The config's LR schedule fitted to ``epochs`` (cosine T_max, warm-up <= 1/5 of it)."""
    out = []
    for s in schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]:
        s = dict(s)
        if s.get('type') == 'CosineAnnealingLR' and s.get('by_epoch', True):
            s['T_max'] = epochs
            s.pop('end', None)
        elif not s.get('by_epoch', True) and 'end' in s:
            s['end'] = min(s['end'], max(1, epochs * iters_per_epoch // 5))
        out.append(s)
    return out


def configure(cfg: Config, name: str, size: Dict[str, int], args: argparse.Namespace,
              work_dir: str, val_ann: Optional[str] = None) -> Config:
    """Point a loaded task config at the data subsets, epochs and quiet logging of a run."""
    data = osp.join(args.data_root, TASKS[name].data_dir)
    loader = dict(num_workers=args.workers, persistent_workers=False)
    train = dict(loader, dataset=dict(indices=size['train']))
    if size['batch']:
        train['batch_size'] = size['batch']
    test = dict(loader, dataset=dict(indices=size['val']))
    if name == 'cls':
        train['dataset']['data_root'] = test['dataset']['data_root'] = data
        train['dataset']['split'], test['dataset']['split'] = 'train', 'test'
    elif name == 'det':
        train['dataset']['data_root'] = test['dataset']['data_root'] = data + '/'
        test['dataset'].pop('indices')  # the subset annotation file selects the images
        test['dataset']['ann_file'] = val_ann
        cfg.merge_from_dict(dict(model=dict(test_cfg=dict(score_thr=args.det_score_thr))))
        cfg.test_evaluator = dict(cfg.test_evaluator, ann_file=val_ann)
    else:
        train['dataset'].update(ann_file=osp.join(data, 'train_list_videos.txt'),
                                data_prefix=dict(video=osp.join(data, 'videos_train')))
        test['dataset'].update(ann_file=osp.join(data, 'val_list_videos.txt'),
                               data_prefix=dict(video=osp.join(data, 'videos_val')))
    cfg.merge_from_dict(dict(train_dataloader=train, test_dataloader=test))
    epochs = size['epochs']
    iters = -(-size['train'] // cfg.train_dataloader.batch_size)
    cfg.train_cfg = dict(cfg.train_cfg, max_epochs=epochs, val_interval=epochs + 1)
    cfg.param_scheduler = _fit_schedule(cfg.param_scheduler, epochs, iters)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # test once, after training
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10**6)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs, max_keep_ckpts=1)
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=args.seed)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'transfer_{name}_{osp.basename(work_dir)}_{uuid.uuid4().hex[:8]}'
    if cfg.get('visualizer'):  # a fresh visualizer (global instance) writing to this work_dir
        cfg.visualizer = dict(cfg.visualizer, name=cfg.experiment_name)
    return cfg


def input_shape(name: str, cfg: Config) -> Tuple[int, ...]:
    """One sample's shape as the backbone sees it (video: C, T, H, W; det: padded canvas)."""
    scaled = cfg.scaled
    channels = cfg.model.backbone.get('in_channels', 3)
    if name == 'det':  # square canvases, resized as the test pipeline says, then padded
        resize = next((t for t in cfg.test_dataloader.dataset.pipeline
                       if t.get('type') == 'Resize' and 'scale' in t), None)
        side = min(resize['scale']) if resize else scaled['input_size'][0]
        div = cfg.model.data_preprocessor.get('pad_size_divisor', 1)
        side = -(-side // div) * div
        return (channels, side, side)
    if name == 'video':
        return (channels, scaled['num_frames'], *scaled['input_size'])
    return (channels, *scaled['input_size'])


def run_one(name: str, which: str, cfg: Config, rule_path: str, size: Dict[str, int],
            args: argparse.Namespace, out_dir: str, stages: Stages,
            val_ann: Optional[str] = None) -> Tuple[Dict[str, Any], nn.Module]:
    """Train, evaluate and count the FLOPs of one (task, rule) pair; also return its backbone."""
    from mmengine.runner import Runner

    from mmvitscale.cost import count_params, get_complexity
    task = TASKS[name]
    label = osp.splitext(osp.basename(rule_path))[0]
    work_dir = osp.join(out_dir, name, which)
    cfg = configure(cfg, name, size, args, work_dir, val_ann)
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, 'host_output.log'), 'w') as log, \
            contextlib.redirect_stdout(log):  # pycocotools' summaries etc.
        with stages.stage(f'{name}/{which} ({label}): train {size["epochs"]} ep x '
                          f'{size["train"]} {task.unit}'):
            t0 = time.perf_counter()
            runner = Runner.from_cfg(cfg)
            runner.train()
            train_s = time.perf_counter() - t0
        with stages.stage(f'{name}/{which}: evaluate on {size["val"]} {task.unit}'):
            t0 = time.perf_counter()
            metrics = {k: float(v) for k, v in runner.test().items()
                       if isinstance(v, (int, float))}
            eval_s = time.perf_counter() - t0
    if task.metric not in metrics:
        raise RuntimeError(f'{name}: the evaluator gave no {task.metric}: {sorted(metrics)}')
    backbone = runner.model.backbone
    shape = input_shape(name, cfg)
    cost = get_complexity(backbone, shape)
    arch = cfg.scaled['arch']
    result = dict(
        label=label, rule_file=osp.abspath(rule_path), scaling=dict(cfg.scaling),
        arch=dict(depth=arch['num_layers'], width=arch['embed_dims'], heads=arch['num_heads'],
                  mlp_ratio=arch['mlp_ratio'], patch_size=arch['patch_size']),
        input_shape=list(shape), metric=metrics[task.metric] * task.metric_scale,
        metric_raw=metrics[task.metric], metrics=metrics, gflops=cost['flops'] / 1e9,
        params_m=cost['params'] / 1e6, model_params_m=count_params(runner.model) / 1e6,
        train_s=train_s, eval_s=eval_s)
    return result, backbone


def paired_latency(models: Dict[str, Tuple[nn.Module, Sequence[int]]], rounds: int,
                   repeats: int, warmup_s: float) -> Dict[str, Dict[str, float]]:
    """Batch-1 latency of several models, measured in alternating rounds.

    Each round times every model (``repeats`` runs after a warm-up); a model's latency is the
    median of its round medians, so a load change on a shared machine hits all models alike.
    """
    from mmvitscale.cost import measure_latency
    medians: Dict[str, List[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for key, (model, shape) in models.items():
            lat = measure_latency(model, shape, warmup_s=warmup_s, repeats=repeats)
            medians[key].append(lat['median_ms'])
    return {k: dict(latency_ms=statistics.median(v), latency_min_ms=min(v),
                    latency_max_ms=max(v), latency_rounds=len(v), latency_repeats=repeats)
            for k, v in medians.items()}


# ----------------------------------------------------------------------------------------------
# verdict and report


def verdict(baseline: Dict[str, float], rule: Dict[str, float], tolerance: float = 0.15,
            margin: float = 0.0) -> Dict[str, Any]:
    """Did the rule beat the baseline at equal cost?

    Equal cost: ``|rule FLOPs / baseline FLOPs - 1| <= tolerance``; otherwise the pair is
    ``'not comparable'``. At equal cost the rule ``'transferred'`` when its metric exceeds the
    baseline's by more than ``margin`` points, else it ``'did not transfer'``.
    """
    if baseline['gflops'] <= 0:
        raise ValueError(f'baseline FLOPs must be positive, got {baseline["gflops"]}')
    ratio = rule['gflops'] / baseline['gflops']
    delta = rule['metric'] - baseline['metric']
    cost = f'FLOPs x{ratio:.2f} of the baseline'
    if 'latency_ms' in rule and 'latency_ms' in baseline and baseline['latency_ms'] > 0:
        cost += f', latency x{rule["latency_ms"] / baseline["latency_ms"]:.2f}'
    if abs(ratio - 1) > tolerance:
        status = 'not comparable'
        text = (f'not comparable: {cost}, outside the equal-cost tolerance of '
                f'{tolerance:.0%} (metric {delta:+.2f})')
    elif delta > margin:
        status = 'transferred'
        text = f'transferred: {delta:+.2f} points at equal cost ({cost})'
    else:
        status = 'did not transfer'
        text = (f'did not transfer: {delta:+.2f} points at equal cost ({cost})'
                + (f'; gains up to {margin:g} points count as ties' if margin else ''))
    return dict(status=status, text=text, flops_ratio=ratio, metric_delta=delta,
                tolerance=tolerance, margin=margin)


def to_markdown(report: Dict[str, Any]) -> str:
    """Markdown tables and verdicts of a report."""
    meta = report['meta']
    lines = ['# Scaling transfer', '',
             f"Rule `{meta['rule']}` vs baseline `{meta['baseline']}`; seed {meta['seed']}, "
             f"{meta['threads']} torch threads, {meta['cpu']}, torch {meta['torch']}; "
             f"load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at end; "
             f"wall time {meta['wall_s']:.0f} s.", '',
             'GFLOPs = multiply-accumulates of the backbone (attention counted) at the input '
             'shape; params of the backbone; latency: backbone, batch 1, CPU, median ms '
             f"over {meta['latency_rounds']} rounds alternating the two models. "
             f"Equal cost = FLOPs within {meta['tolerance']:.0%}. One seed and a short "
             'schedule: differences of a point or two may be noise.', '']
    for name, task in report['tasks'].items():
        s = task['settings']
        chance = f", chance {task['chance']:g}" if task['chance'] is not None else ''
        lines += [f"## {name}: {task['metric_name']} ({METRIC_LABEL[name]}{chance})", '',
                  f"{s['epochs']} epochs on {s['train']} training {TASKS[name].unit}, "
                  f"evaluated on {s['val']}.", '',
                  '| run | rule | depth | width | input | metric | GFLOPs | params (M) '
                  '| latency (ms) |', '|---|---|---|---|---|---|---|---|---|']
        for which in ('baseline', 'rule'):
            r = task['runs'][which]
            shape = 'x'.join(str(v) for v in r['input_shape'])
            lines.append(f"| {which} | {r['label']} | {r['arch']['depth']} | "
                         f"{r['arch']['width']} | {shape} | {r['metric']:.2f} | "
                         f"{r['gflops']:.4f} | {r['params_m']:.3f} | {r['latency_ms']:.2f} |")
        lines += ['', f"**Verdict:** {task['verdict']['text']}."]
        if task['chance'] is not None:
            low = [w for w in ('baseline', 'rule')
                   if task['runs'][w]['metric'] <= task['chance']]
            if low:
                lines.append(f"Warning: {', '.join(low)} at or below chance "
                             f"({task['chance']:g}); train longer (--{name}-epochs).")
        lines.append('')
    return '\n'.join(lines)


def plot(report: Dict[str, Any], path: str) -> None:
    """Metric vs GFLOPs and metric vs latency per task, baseline and rule labelled."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    tasks = report['tasks']
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.4 * len(tasks)), squeeze=False)
    style = {'baseline': dict(marker='o', color='tab:blue'),
             'rule': dict(marker='^', color='tab:red')}
    for row, (name, task) in zip(axes, tasks.items()):
        for ax, key, xlabel in ((row[0], 'gflops', 'backbone GFLOPs (MACs)'),
                                (row[1], 'latency_ms', 'backbone latency, batch 1 (ms)')):
            for which in ('baseline', 'rule'):
                r = task['runs'][which]
                ax.scatter(r[key], r['metric'], s=70, label=f"{which}: {r['label']}",
                           **style[which])
                ax.annotate(r['label'], (r[key], r['metric']), textcoords='offset points',
                            xytext=(6, 4), fontsize=8)
            if key == 'gflops':
                base = task['runs']['baseline']['gflops']
                tol = task['verdict']['tolerance']
                ax.axvspan(base * (1 - tol), base * (1 + tol), color='0.9', zorder=0,
                           label=f'equal cost (±{tol:.0%})')
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(METRIC_LABEL[name])
            ax.set_title(f"{name}: {task['verdict']['status']}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.margins(0.25)
        row[0].legend(fontsize=8, loc='best')
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_report(report: Dict[str, Any], out_dir: str) -> None:
    """``transfer.json``, ``transfer.md`` and ``transfer.png`` under ``out_dir`` (atomic)."""
    atomic_write(osp.join(out_dir, 'transfer.json'), json.dumps(report, indent=2) + '\n')
    if report['tasks']:
        atomic_write(osp.join(out_dir, 'transfer.md'), to_markdown(report))
        plot(report, osp.join(out_dir, 'transfer.png'))


def _loadavg() -> str:
    try:
        return ' '.join(f'{v:.2f}' for v in os.getloadavg())
    except OSError:
        return 'n/a'


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    configs = check_args(args)
    args.out_dir, args.data_root = osp.abspath(args.out_dir), osp.abspath(args.data_root)
    torch.set_num_threads(args.threads)
    stages = Stages()
    os.makedirs(args.out_dir, exist_ok=True)
    report: Dict[str, Any] = dict(meta=dict(
        rule=osp.relpath(osp.abspath(args.rule), ROOT),
        baseline=osp.relpath(osp.abspath(args.baseline), ROOT),
        tasks=list(configs), latency_rounds=args.latency_rounds, tolerance=args.tolerance,
        margin=args.margin, seed=args.seed,
        threads=torch.get_num_threads(), cpu=cpu_name(),
        torch=torch.__version__, loadavg_start=_loadavg(), loadavg_end=None,
        started=time.strftime('%Y-%m-%d %H:%M:%S'), wall_s=0.0), tasks={})
    sizes = {name: settings(args, name) for name in configs}
    for name in configs:
        with stages.stage(f'{name}: data under {args.data_root}'):
            ensure_data(name, args.data_root, sizes[name])
    for name in configs:
        val_ann = None
        if name == 'det':
            data = osp.join(args.data_root, TASKS[name].data_dir)
            os.makedirs(osp.join(args.out_dir, name), exist_ok=True)
            val_ann = coco_subset(osp.join(data, 'annotations', 'instances_val.json'),
                                  osp.join(args.out_dir, name, 'instances_val_subset.json'),
                                  sizes[name]['val'])
        runs, models = {}, {}
        for which, rule_path in (('baseline', args.baseline), ('rule', args.rule)):
            runs[which], backbone = run_one(name, which, configs[name][which], rule_path,
                                            sizes[name], args, args.out_dir, stages, val_ann)
            models[which] = (backbone, runs[which]['input_shape'])
        with stages.stage(f'{name}: latency, {args.latency_rounds} rounds x '
                          f'{args.latency_repeats} runs per model'):
            for which, lat in paired_latency(models, args.latency_rounds, args.latency_repeats,
                                             args.latency_warmup).items():
                runs[which].update(lat)
        del models
        task = TASKS[name]
        report['tasks'][name] = dict(
            metric_name=task.metric, metric_unit=METRIC_LABEL[name], chance=task.chance,
            settings=sizes[name], runs=runs,
            verdict=verdict(runs['baseline'], runs['rule'], args.tolerance, args.margin))
        stages.console.print(f"[{_clock(stages.elapsed())}] {name}: "
                             f"{report['tasks'][name]['verdict']['text']}")
        report['meta'].update(loadavg_end=_loadavg(), wall_s=stages.elapsed())
        write_report(report, args.out_dir)
    stages.console.print(f'[{_clock(stages.elapsed())}] wrote {args.out_dir}/transfer.json, '
                         '.md and .png')
    return report


if __name__ == '__main__':
    main()
