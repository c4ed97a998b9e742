"""Castling-ViT accuracy check: softmax vs linear-angular attention on offline Fashion-MNIST.

    python tools/analysis/castling_accuracy.py [--epochs 3] [--train 6000] [--val 2000]
        [--kernel-size 5] [--aux-weight 0.01] [--aux-lr-mult 10] [--out-dir DIR]

Trains ``configs/cls/scaled_vit_fmnist.py`` (under ``--rule``, default: the config's own rule)
three times with mmengine's stock Runner, same seed, epochs and data subsets
(:func:`mmvitscale.experiments.tasks.configure`: first ``--train`` training images, first
``--val`` test images, quiet logs, one test after training):

* ``softmax``: the config as it is;
* ``linear``: ``attn_type='linear_angular'`` without the auxiliary branch;
* ``linear_aux``: ``attn_type='linear_angular', aux_branch=True`` trained with
  :class:`~mmvitscale.engine.AuxMaskSparsityHook`, evaluated as trained (``before conversion``)
  and again after :func:`~mmvitscale.models.linear_attention.convert_to_inference` (the pure
  linear model, ``linear_aux -> converted``). The converted backbone is checked against a fresh
  ``inference_only=True`` backbone loaded with the same weights (``max |logit diff|``).

Kernel size: the config's grid is 8x8 tokens (32 px / patch 4). ``check_kernel_size`` accepts
up to ``2*8-1 = 15``, so the backbone default 9 would build, but a 9x9 depthwise conv already
covers the whole 8x8 grid from every token; the default here is 5 (about the ratio of
Castling-ViT's 9 at 14x14), set with ``--kernel-size``.

Auxiliary masks start at 1. Under AdamW each step moves a mask by about ``lr`` whatever the
penalty weight, so with the config's ``lr=2e-3`` and a short cosine schedule a mask cannot travel
from 1 to 0; ``--aux-lr-mult`` (default 10, ``decay_mult=0``) gives the ``aux_mask``
parameters their own learning rate through the optimiser's ``paramwise_cfg`` (it touches no
other parameter, and only the ``linear_aux`` run has masks). ``--aux-lr-mult 1`` keeps the
config's optimiser as it is.

Writes ``castling_accuracy.json``, ``.md`` and ``.png`` (top-1 bar chart) to ``--out-dir``
(atomic writes, the report updated after each run).
"""
import argparse
import os
import os.path as osp
import time
from typing import Any, Dict, List, Optional, Sequence

import mmvitscale  # noqa: F401  (stack shims + registries, before any host import)
import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmvitscale.cost import cpu_name  # noqa: E402
from mmvitscale.experiments.console import Stages  # noqa: E402
from mmvitscale.experiments.console import clock as _clock  # noqa: E402
from mmvitscale.experiments.console import loadavg_text as _loadavg  # noqa: E402
from mmvitscale.experiments.tasks import configure, ensure_data, get_task  # noqa: E402
from mmvitscale.fileio import atomic_write, save_figure  # noqa: E402
from mmvitscale.rules import load_with_rule  # noqa: E402

CONFIG = 'configs/cls/scaled_vit_fmnist.py'
RUNS = ('softmax', 'linear', 'linear_aux')
LABELS = {'softmax': 'softmax', 'linear': 'linear-angular',
          'linear_aux': 'linear-angular + aux (before conversion)',
          'converted': 'linear-angular + aux -> converted'}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--config', default=osp.join(ROOT, CONFIG), help='classification config')
    p.add_argument('--rule', default=None, help="scaling rule file (default: the config's)")
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--train', type=int, default=6000, help='first N training images')
    p.add_argument('--val', type=int, default=2000, help='first N test images')
    p.add_argument('--batch', type=int, default=32, help='training batch size')
    p.add_argument('--kernel-size', type=int, default=5,
                   help='linear_kernel_size (odd; the fmnist grid is 8x8)')
    p.add_argument('--aux-weight', type=float, default=0.01,
                   help='AuxMaskSparsityHook weight (L1 on the aux masks)')
    p.add_argument('--aux-lr-mult', type=float, default=10.0,
                   help='learning-rate multiplier of the aux_mask parameters (1: as config)')
    p.add_argument('--runs', nargs='+', choices=RUNS, default=list(RUNS))
    p.add_argument('--data-root', default=osp.join(ROOT, 'data'),
                   help='folder holding fashion_mnist/')
    p.add_argument('--out-dir', default=osp.join(ROOT, 'work_dirs', 'castling_accuracy'))
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    args = p.parse_args(argv)
    for flag in ('epochs', 'train', 'val', 'batch', 'threads'):
        if getattr(args, flag) < 1:
            p.error(f'--{flag} must be >= 1, got {getattr(args, flag)}')
    if args.kernel_size < 1 or args.kernel_size % 2 == 0:
        p.error(f'--kernel-size must be an odd positive int, got {args.kernel_size}')
    if args.aux_weight < 0 or not args.aux_lr_mult > 0:
        p.error('--aux-weight must be >= 0 and --aux-lr-mult > 0')
    return args


def load_config(args: argparse.Namespace) -> Config:
    """The task config, under ``--rule`` when given."""
    if args.rule:
        return load_with_rule(args.config, args.rule)
    return Config.fromfile(args.config)


def variant(cfg: Config, which: str, args: argparse.Namespace) -> Config:
    """Switch the loaded config's backbone (and hooks / optimiser) to one of ``RUNS``."""
    if which == 'softmax':
        return cfg
    backbone = dict(attn_type='linear_angular', linear_kernel_size=args.kernel_size,
                    aux_branch=which == 'linear_aux')
    cfg.merge_from_dict(dict(model=dict(backbone=backbone)))
    if which == 'linear_aux':
        hooks = list(cfg.get('custom_hooks', None) or [])
        cfg.custom_hooks = hooks + [dict(type='mmvitscale.AuxMaskSparsityHook',
                                         weight=args.aux_weight)]
        if args.aux_lr_mult != 1:
            paramwise = dict(cfg.optim_wrapper.get('paramwise_cfg', None) or {})
            keys = dict(paramwise.get('custom_keys', {}))
            keys['aux_mask'] = dict(lr_mult=args.aux_lr_mult, decay_mult=0.0)
            paramwise['custom_keys'] = keys
            cfg.optim_wrapper.paramwise_cfg = paramwise
    return cfg


def _top1(metrics: Dict[str, Any]) -> float:
    if 'accuracy/top1' not in metrics:
        raise RuntimeError(f'the evaluator gave no accuracy/top1: {sorted(metrics)}')
    return float(metrics['accuracy/top1'])


def mask_stats(model: torch.nn.Module) -> Dict[str, Any]:
    """Per-layer ``|aux_mask|`` (mean over heads) and summary magnitudes."""
    from mmvitscale.models.linear_attention import aux_masks
    masks = [m.detach().abs().float() for m in aux_masks(model)]
    flat = torch.cat(masks)
    return dict(per_layer_mean_abs=[round(float(m.mean()), 6) for m in masks],
                values=[[round(float(v), 6) for v in m] for m in masks],
                mean_abs=float(flat.mean()), max_abs=float(flat.max()),
                l1_sum=float(flat.sum()), num_heads_total=int(flat.numel()))


def check_converted(runner, cfg: Config) -> float:
    """Max |logit diff| between the converted model and an ``inference_only`` rebuild."""
    from mmvitscale.registry import MODELS
    model = runner.model
    bb_cfg = dict(cfg.model.backbone)
    bb_cfg.update(inference_only=True)
    fresh = MODELS.build(bb_cfg).eval()
    state = {k[len('backbone.'):]: v for k, v in model.state_dict().items()
             if k.startswith('backbone.')}
    fresh.load_state_dict(state)  # strict: same keys once the aux masks are gone
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, bb_cfg.get('in_channels', 3), *cfg.scaled['input_size'], generator=g)
    model.eval()
    with torch.no_grad():
        a = model.backbone(x)[-1]
        b = fresh(x)[-1]
    return float((a - b).abs().max())


def run_one(which: str, args: argparse.Namespace, stages: Stages) -> Dict[str, Any]:
    """Train and evaluate one variant; ``linear_aux`` also converts and re-evaluates."""
    import contextlib

    from mmengine.runner import Runner

    from mmvitscale.cost import count_params, get_complexity
    from mmvitscale.models.linear_attention import convert_to_inference
    size = dict(epochs=args.epochs, train=args.train, val=args.val, batch=args.batch)
    work_dir = osp.join(args.out_dir, which)
    cfg = configure(variant(load_config(args), which, args), get_task('cls'), size, args.seed,
                    work_dir, args.data_root, loader_workers=args.workers)
    cfg.experiment_name = f'castling_{which}_{os.getpid()}_{int(time.time())}'
    if cfg.get('visualizer'):
        cfg.visualizer = dict(cfg.visualizer, name=cfg.experiment_name)
    os.makedirs(work_dir, exist_ok=True)
    out: Dict[str, Any] = dict(run=which, label=LABELS[which],
                               backbone={k: v for k, v in dict(cfg.model.backbone).items()
                                         if k in ('attn_type', 'linear_kernel_size',
                                                  'aux_branch', 'scaling')})
    with open(osp.join(work_dir, 'host_output.log'), 'w') as log, \
            contextlib.redirect_stdout(log):
        with stages.stage(f'{which}: train {args.epochs} ep x {args.train} images'):
            t0 = time.perf_counter()
            runner = Runner.from_cfg(cfg)
            runner.train()
            out['train_s'] = time.perf_counter() - t0
        with stages.stage(f'{which}: evaluate on {args.val} images'):
            t0 = time.perf_counter()
            out['top1'] = _top1(runner.test())
            out['eval_s'] = time.perf_counter() - t0
        backbone = runner.model.backbone
        shape = (cfg.model.backbone.get('in_channels', 3), *cfg.scaled['input_size'])
        out['gflops'] = get_complexity(backbone, shape)['flops'] / 1e9
        out['params_m'] = count_params(runner.model) / 1e6
        if which == 'linear_aux':
            out['aux_mask'] = mask_stats(runner.model)
            with stages.stage('linear_aux: convert_to_inference, evaluate the pure linear model'):
                convert_to_inference(runner.model)
                # the sparsity hook's before_run rejects a model without masks: drop it
                runner._hooks = [h for h in runner._hooks
                                 if type(h).__name__ != 'AuxMaskSparsityHook']
                t0 = time.perf_counter()
                out['converted'] = dict(
                    top1=_top1(runner.test()), eval_s=time.perf_counter() - t0,
                    gflops=get_complexity(runner.model.backbone, shape)['flops'] / 1e9,
                    params_m=count_params(runner.model) / 1e6,
                    max_logit_diff_vs_inference_only=check_converted(runner, cfg))
    stages.console.print(f'[{_clock(stages.elapsed())}] {which}: top-1 {out["top1"]:.2f}%'
                         + (f', converted {out["converted"]["top1"]:.2f}%, mean |aux_mask| '
                            f'{out["aux_mask"]["mean_abs"]:.4f}' if 'converted' in out else ''))
    return out


def rows(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One table row per evaluated model (``linear_aux`` gives two)."""
    out = []
    for which, r in report['runs'].items():
        out.append(dict(key=which, label=LABELS[which], top1=r['top1'], train_s=r['train_s'],
                        gflops=r['gflops'], params_m=r['params_m']))
        if 'converted' in r:
            c = r['converted']
            out.append(dict(key='converted', label=LABELS['converted'], top1=c['top1'],
                            train_s=r['train_s'], gflops=c['gflops'], params_m=c['params_m']))
    return out


def to_markdown(report: Dict[str, Any]) -> str:
    m = report['meta']
    lines = ['# Castling-ViT accuracy check (offline Fashion-MNIST)', '',
             f"Config `{m['config']}`, rule `{m['rule']}`; {m['epochs']} epochs on the first "
             f"{m['train']} training images (batch {m['batch']}), top-1 on the first {m['val']} "
             f"test images; seed {m['seed']}, {m['threads']} torch thread(s), torch "
             f"{m['torch']}, {m['cpu']}; load average {m['loadavg_start']} at start, "
             f"{m['loadavg_end']} at end; wall time {m['wall_s']:.0f} s.", '',
             f"Linear-angular: `linear_kernel_size={m['kernel_size']}` (8x8 token grid). "
             f"Aux branch: AuxMaskSparsityHook weight {m['aux_weight']:g}, aux_mask lr x"
             f"{m['aux_lr_mult']:g} (decay_mult 0). GFLOPs: backbone MACs at the input "
             'shape; params: whole classifier. Train time: wall clock of `runner.train()` on '
             'a shared CPU (load varies), so compare it loosely.', '',
             '| model | top-1 % | train (s) | GFLOPs | params (M) |', '|---|---:|---:|---:|---:|']
    for r in rows(report):
        lines.append(f"| {r['label']} | {r['top1']:.2f} | {r['train_s']:.1f} | "
                     f"{r['gflops']:.4f} | {r['params_m']:.4f} |")
    aux = report['runs'].get('linear_aux')
    if aux:
        a, c = aux['aux_mask'], aux['converted']
        lines += ['', f"Final aux masks ({a['num_heads_total']} heads): mean |mask| "
                  f"{a['mean_abs']:.4f}, max {a['max_abs']:.4f}, L1 sum {a['l1_sum']:.4f}; per "
                  f"layer mean |mask|: {', '.join(f'{v:.4f}' for v in a['per_layer_mean_abs'])}."
                  f" Conversion changes top-1 by {c['top1'] - aux['top1']:+.2f} points "
                  '(exact only for zero masks). Converted model vs a fresh '
                  '`inference_only=True` backbone with the same weights: max |output diff| '
                  f"{c['max_logit_diff_vs_inference_only']:.2e}."]
    if 'softmax' in report['runs']:
        base = report['runs']['softmax']['top1']
        lines += ['', 'Versus softmax: ' + '; '.join(
            f"{r['label']} {r['top1'] - base:+.2f} points" for r in rows(report)
            if r['key'] != 'softmax') + '.']
    lines += ['', 'One seed and a short schedule: differences of a point or two may be noise.',
              '']
    return '\n'.join(lines)


def plot(report: Dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    data = rows(report)
    colors = {'softmax': 'tab:blue', 'linear': 'tab:orange', 'linear_aux': 'tab:green',
              'converted': 'tab:red'}
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(range(len(data)), [r['top1'] for r in data],
                  color=[colors[r['key']] for r in data])
    for bar, r in zip(bars, data):
        ax.annotate(f"{r['top1']:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha='center', va='bottom', fontsize=9)
    ax.set_xticks(range(len(data)))
    ax.set_xticklabels([r['label'].replace(' (', '\n(').replace(' -> ', '\n-> ')
                        for r in data], fontsize=8)
    m = report['meta']
    ax.set_ylabel('top-1 %')
    ax.set_ylim(0, 100)
    ax.set_title(f"Fashion-MNIST, {m['epochs']} ep x {m['train']} imgs, seed {m['seed']}",
                 fontsize=10)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_report(report: Dict[str, Any], out_dir: str) -> None:
    import json
    atomic_write(osp.join(out_dir, 'castling_accuracy.json'), json.dumps(report, indent=2) + '\n')
    if report['runs']:
        atomic_write(osp.join(out_dir, 'castling_accuracy.md'), to_markdown(report))
        plot(report, osp.join(out_dir, 'castling_accuracy.png'))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    args.out_dir, args.data_root = osp.abspath(args.out_dir), osp.abspath(args.data_root)
    load_config(args)  # fail early on a bad config / rule
    torch.set_num_threads(args.threads)
    stages = Stages()
    os.makedirs(args.out_dir, exist_ok=True)
    report: Dict[str, Any] = dict(meta=dict(
        config=osp.relpath(osp.abspath(args.config), ROOT),
        rule=osp.relpath(osp.abspath(args.rule), ROOT) if args.rule else "config's own",
        epochs=args.epochs, train=args.train, val=args.val, batch=args.batch,
        kernel_size=args.kernel_size, aux_weight=args.aux_weight, aux_lr_mult=args.aux_lr_mult,
        seed=args.seed, threads=torch.get_num_threads(), torch=torch.__version__,
        cpu=cpu_name(), loadavg_start=_loadavg(),
        loadavg_end=None, started=time.strftime('%Y-%m-%d %H:%M:%S'), wall_s=0.0), runs={})
    with stages.stage(f'data under {args.data_root}'):
        ensure_data(get_task('cls'), args.data_root, dict(train=args.train, val=args.val))
    for which in args.runs:
        report['runs'][which] = run_one(which, args, stages)
        report['meta'].update(loadavg_end=_loadavg(), wall_s=stages.elapsed())
        write_report(report, args.out_dir)
    stages.console.print(f'[{_clock(stages.elapsed())}] wrote {args.out_dir}/'
                         'castling_accuracy.json, .md and .png')
    return report


if __name__ == '__main__':
    main()
