"""Castling-ViT accuracy study: softmax vs linear-angular attention, seeded and paired.

The logic of ``tools/analysis/castling_accuracy.py`` (its docstring describes the variants).
Every variant trains once per seed with the same seeds (:mod:`mmvitscale.experiments.seeded`);
``linear_aux`` is also converted to the pure linear model and evaluated again, which gives the
``converted`` arm. Each variant is compared with ``softmax`` (when run) and ``converted`` with
``linear_aux`` (what the conversion costs), by the paired per-seed differences.
"""
import contextlib
import os
import os.path as osp
import time
from typing import Any, Dict, List, Mapping, Sequence

import torch
from mmengine.config import Config

from ..engine.config import load_config
from ..fileio import json_ready
from . import seeded
from .console import clock, loadavg_text
from .runner import remove_checkpoints, train_and_test
from .seeded import rel_path
from .store import machine_fingerprint
from .tasks import configure, ensure_data, get_task

NAME = 'castling_accuracy'
CONFIG = 'configs/cls/scaled_vit_fmnist.py'
RUNS = ('softmax', 'linear', 'linear_aux')
LABELS = {'softmax': 'softmax', 'linear': 'linear-angular',
          'linear_aux': 'linear-angular + aux (before conversion)',
          'converted': 'linear-angular + aux -> converted'}
METRICS = (seeded.Metric('top1', 'top-1 %'),)


def variant(cfg: Config, which: str, kernel_size: int, aux_weight: float,
            aux_lr_mult: float) -> Config:
    """Switch the loaded config's backbone (and hooks / optimiser) to one of ``RUNS``."""
    if which == 'softmax':
        return cfg
    backbone = dict(attn_type='linear_angular', linear_kernel_size=kernel_size,
                    aux_branch=which == 'linear_aux')
    cfg.merge_from_dict(dict(model=dict(backbone=backbone)))
    if which == 'linear_aux':
        hooks = list(cfg.get('custom_hooks', None) or [])
        cfg.custom_hooks = hooks + [dict(type='mmvitscale.AuxMaskSparsityHook',
                                         weight=aux_weight)]
        if aux_lr_mult != 1:
            paramwise = dict(cfg.optim_wrapper.get('paramwise_cfg', None) or {})
            keys = dict(paramwise.get('custom_keys', {}))
            keys['aux_mask'] = dict(lr_mult=aux_lr_mult, decay_mult=0.0)
            paramwise['custom_keys'] = keys
            cfg.optim_wrapper.paramwise_cfg = paramwise
    return cfg


def _top1(metrics: Mapping[str, Any]) -> float:
    if 'accuracy/top1' not in metrics:
        raise RuntimeError(f'the evaluator gave no accuracy/top1: {sorted(metrics)}')
    return float(metrics['accuracy/top1'])


def mask_stats(model: torch.nn.Module) -> Dict[str, Any]:
    """Per-layer ``|aux_mask|`` (mean over heads) and summary magnitudes."""
    from ..models.linear_attention import aux_masks
    masks = [m.detach().abs().float() for m in aux_masks(model)]
    flat = torch.cat(masks)
    return dict(per_layer_mean_abs=[round(float(m.mean()), 6) for m in masks],
                values=[[round(float(v), 6) for v in m] for m in masks],
                mean_abs=float(flat.mean()), max_abs=float(flat.max()),
                l1_sum=float(flat.sum()), num_heads_total=int(flat.numel()))


def check_converted(runner, cfg: Config) -> float:
    """Max |logit diff| between the converted model and an ``inference_only`` rebuild."""
    from ..registry import MODELS
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


def settings(opts: Any, which: str) -> Dict[str, Any]:
    """What decides a variant's result besides the seed (its trial key)."""
    out = dict(config=osp.basename(opts.config), config_sha=seeded.file_digest(opts.config),
               rule_sha=seeded.file_digest(opts.rule) if opts.rule else None,
               epochs=opts.epochs, train=opts.train, val=opts.val, batch=opts.batch)
    if which != 'softmax':
        out['kernel_size'] = opts.kernel_size
    if which == 'linear_aux':
        out.update(aux_weight=opts.aux_weight, aux_lr_mult=opts.aux_lr_mult)
    return out


def run_one(opts: Any, which: str, seed: int, stages: Any) -> Dict[str, Any]:
    """Train and evaluate one variant with one seed; ``linear_aux`` also converts and
    re-evaluates. ``opts``: the tool's parsed arguments; ``stages``: console stage lines."""
    from ..cost import count_params, get_complexity
    from ..models.linear_attention import convert_to_inference
    size = dict(epochs=opts.epochs, train=opts.train, val=opts.val, batch=opts.batch)
    work_dir = osp.join(opts.out_dir, 'trials', which, f'seed{seed}')
    cfg = variant(load_config(opts.config, opts.rule), which, opts.kernel_size,
                  opts.aux_weight, opts.aux_lr_mult)
    cfg = configure(cfg, get_task('cls'), size, seed, work_dir, opts.data_root,
                    loader_workers=opts.workers)
    os.makedirs(work_dir, exist_ok=True)
    machine = machine_fingerprint()
    out: Dict[str, Any] = dict(
        run=which, label=LABELS[which], machine=machine,
        backbone=json_ready({k: v for k, v in dict(cfg.model.backbone).items()
                             if k in ('attn_type', 'linear_kernel_size', 'aux_branch',
                                      'scaling')}))
    t_start = time.perf_counter()
    with open(osp.join(work_dir, 'host_output.log'), 'w') as log, \
            contextlib.redirect_stdout(log):
        with stages.stage(f'{which} seed {seed}: train {opts.epochs} ep x {opts.train} images'):
            key = seeded.trial_key(NAME, which, seed, settings(opts, which))
            done = train_and_test(cfg, test=False, identity=key)
            train_s = done.build_s + done.train_s
        with stages.stage(f'{which} seed {seed}: evaluate on {opts.val} images'):
            t0 = time.perf_counter()
            top1 = _top1(done.test())
            eval_s = time.perf_counter() - t0
        shape = (cfg.model.backbone.get('in_channels', 3), *cfg.scaled['input_size'])
        out['metrics'] = dict(top1=top1, train_s=train_s, eval_s=eval_s,
                              gflops=get_complexity(done.model.backbone, shape)['flops'] / 1e9,
                              params_m=count_params(done.model) / 1e6)
        if which == 'linear_aux':
            out['aux_mask'] = mask_stats(done.model)
            with stages.stage(f'linear_aux seed {seed}: convert_to_inference, evaluate the '
                              'pure linear model'):
                convert_to_inference(done.model)
                # the sparsity hook's before_run rejects a model without masks: drop it
                runner = done.runner
                runner._hooks = [h for h in runner._hooks
                                 if type(h).__name__ != 'AuxMaskSparsityHook']
                t0 = time.perf_counter()
                out['converted'] = dict(
                    top1=_top1(done.test()), train_s=train_s,
                    eval_s=time.perf_counter() - t0,
                    gflops=get_complexity(done.model.backbone, shape)['flops'] / 1e9,
                    params_m=count_params(done.model) / 1e6,
                    max_logit_diff_vs_inference_only=check_converted(runner, cfg))
    remove_checkpoints(work_dir)
    out['timings'] = dict(train_s=train_s, eval_s=eval_s,
                          total_s=time.perf_counter() - t_start)
    del done
    stages.console.print(
        f'[{clock(stages.elapsed())}] {which} seed {seed}: top-1 {top1:.2f}%'
        + (f', converted {out["converted"]["top1"]:.2f}%, mean |aux_mask| '
           f'{out["aux_mask"]["mean_abs"]:.4f}' if 'converted' in out else ''))
    return out


def expand(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Trial rows plus one ``converted`` row per ``linear_aux`` row (the same training)."""
    out = [dict(r) for r in rows]
    for r in rows:
        if r['arm'] == 'linear_aux' and r.get('converted'):
            c = r['converted']
            out.append(dict(arm='converted', seed=r['seed'], machine=r.get('machine', {}),
                            metrics={k: v for k, v in c.items()},
                            timings=dict(total_s=0.0)))
    return out


def plan(runs: Sequence[str]):
    """The arms (``converted`` after ``linear_aux``) and the comparisons of a study."""
    arms = list(runs) + (['converted'] if 'linear_aux' in runs else [])
    comparisons = [(a, 'softmax') for a in arms if a != 'softmax'] if 'softmax' in runs else []
    if 'linear_aux' in runs:
        comparisons.append(('converted', 'linear_aux'))
    return arms, comparisons


def summarize(rows: Sequence[Mapping[str, Any]], runs: Sequence[str], seeds: Sequence[int],
              meta: Mapping[str, Any]) -> Dict[str, Any]:
    arms, comparisons = plan(runs)
    summary = seeded.summarize_arms(expand(rows), arms, seeds, comparisons, METRICS,
                                    labels=LABELS, meta=meta,
                                    trial_rows=[r for r in rows if r['seed'] in seeds])
    aux = [r for r in rows if r['arm'] == 'linear_aux' and r['seed'] in seeds]
    if aux:
        summary['aux_mask'] = dict(
            mean_abs_per_seed=[r['aux_mask']['mean_abs'] for r in aux],
            max_abs_per_seed=[r['aux_mask']['max_abs'] for r in aux],
            num_heads_total=aux[0]['aux_mask']['num_heads_total'],
            max_logit_diff_vs_inference_only=max(
                r['converted']['max_logit_diff_vs_inference_only'] for r in aux))
    return summary


def to_markdown(summary: Mapping[str, Any]) -> str:
    m, mach = summary['meta'], summary['machine']
    load = mach['loadavg_1min']
    seeds = summary['seeds']
    lines = ['# Castling-ViT accuracy check (offline Fashion-MNIST)', '',
             f"Config `{m['config']}`, rule `{m['rule']}`; {m['epochs']} epochs on the first "
             f"{m['train']} training images (batch {m['batch']}), top-1 on the first {m['val']} "
             f"test images; seeds {seeds} (paired: every variant trains with the same seeds); "
             f"torch threads {', '.join(str(t) for t in mach['threads'])}, torch "
             f"{', '.join(mach['torch'])}, {', '.join(mach['cpu'])}; 1-min load average "
             + (f'{load[0]:.2f} to {load[1]:.2f}' if load else 'n/a')
             + f" over {mach['trials']} trials.", '',
             f"Linear-angular: `linear_kernel_size={m['kernel_size']}` (8x8 token grid). "
             f"Aux branch: AuxMaskSparsityHook weight {m['aux_weight']:g}, aux_mask lr x"
             f"{m['aux_lr_mult']:g} (decay_mult 0). GFLOPs: backbone MACs at the input "
             'shape; params: whole classifier. Train time: wall clock of `runner.train()` on '
             'a shared CPU (load varies), so compare it loosely. Intervals: '
             f"{summary['confidence']:.0%} Student t over seeds; a verdict is better / worse "
             'only when the interval of the paired difference excludes 0.', '']
    lines += seeded.arms_markdown(summary, extra=(('train_s', 'train (s)', 1),
                                                  ('gflops', 'GFLOPs', 4),
                                                  ('params_m', 'params (M)', 4)))
    aux = summary.get('aux_mask')
    if aux:
        lines += ['', f"Final aux masks ({aux['num_heads_total']} heads), mean |mask| per "
                  f"seed: {', '.join(f'{v:.4f}' for v in aux['mean_abs_per_seed'])}; max "
                  f"{max(aux['max_abs_per_seed']):.4f}. Conversion is exact only for zero "
                  'masks. Converted model vs a fresh `inference_only=True` backbone with the '
                  f"same weights: max |output diff| {aux['max_logit_diff_vs_inference_only']:.2e}"
                  ' (worst seed).']
    lines += seeded.few_seeds_note(seeds)
    return '\n'.join(lines) + '\n'


def write_report(summary: Mapping[str, Any], out_dir: str) -> Dict[str, str]:
    m = summary['meta']
    return seeded.write_seeded_report(summary, out_dir, NAME, to_markdown(summary),
                                      f"Fashion-MNIST, {m['epochs']} ep x {m['train']} imgs, seeds "
                                      f"{summary['seeds']}")


def run_study(opts: Any, stages: Any) -> Dict[str, Any]:
    """Run (or resume) the study the tool's arguments describe; write the report.

    After each trial the report covers the seeds every variant has finished (paired seeds);
    finished trials are kept in ``<out_dir>/trials.jsonl`` and skipped when rerun.
    """
    from ..cost import cpu_name
    seeds = seeded.check_seeds(opts.seeds)
    meta = dict(config=rel_path(opts.config),
                rule=rel_path(opts.rule) if opts.rule else "config's own",
                epochs=opts.epochs, train=opts.train, val=opts.val, batch=opts.batch,
                kernel_size=opts.kernel_size, aux_weight=opts.aux_weight,
                aux_lr_mult=opts.aux_lr_mult, runs=list(opts.runs), cpu=cpu_name(),
                loadavg_start=loadavg_text(), started=time.strftime('%Y-%m-%d %H:%M:%S'))
    os.makedirs(opts.out_dir, exist_ok=True)
    with stages.stage(f'data under {opts.data_root}'):
        ensure_data(get_task('cls'), opts.data_root, dict(train=opts.train, val=opts.val))

    def progress(rows: List[Dict[str, Any]]) -> None:
        done = seeded.complete_seeds(rows, opts.runs, seeds)
        if done:
            write_report(summarize(rows, opts.runs, done,
                                   dict(meta, loadavg_end=loadavg_text(),
                                        wall_s=stages.elapsed())), opts.out_dir)

    rows = seeded.run_arms(NAME, opts.runs, seeds, lambda w: settings(opts, w),
                           lambda w, s: run_one(opts, w, s, stages), opts.out_dir,
                           say=stages.console.print, on_row=progress)
    summary = summarize(rows, opts.runs, seeds,
                        dict(meta, loadavg_end=loadavg_text(), wall_s=stages.elapsed()))
    write_report(summary, opts.out_dir)
    return summary
