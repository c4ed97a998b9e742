"""Progressive re-tokenization study: plain vs progressive schedule, seeded and paired.

The logic of ``tools/analysis/retokenization_study.py``. Both arms train
``configs/cls/scaled_vit_fmnist.py`` once per seed with the same seeds, data and epochs
(:func:`mmvitscale.experiments.tasks.configure`; one test after training): ``plain`` as the
config is, ``progressive`` with ``ProgressiveTokenizationHook(schedule=[(0, factor),
(switch, 1)])``. Per trial: top-1, training wall and process CPU time (validation excluded;
CPU time is the load-robust proxy on a shared machine) per epoch and in total, and the
machine load before and after. Compared per seed: the top-1 difference (points) and the
training time saved (percent of the plain arm's time).
"""
import contextlib
import os
import os.path as osp
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from mmengine.hooks import Hook

from ..engine.config import load_config
from . import seeded
from .console import loadavg_text
from .runner import train_and_test
from .seeded import rel_path
from .store import machine_fingerprint
from .tasks import configure, ensure_data, get_task

NAME = 'retokenization_study'
ARMS = ('plain', 'progressive')
LABELS = {'plain': 'plain', 'progressive': 'progressive'}
METRICS = (seeded.Metric('top1', 'top-1 %'),
           seeded.Metric('train_s', 'training wall time (s)', unit='%', kind='saving',
                         digits=1, compare_label='training wall time saved'),
           seeded.Metric('train_cpu_s', 'training CPU time (s)', unit='%', kind='saving',
                         digits=1, compare_label='training CPU time saved'))
TARGET = dict(saved_pct=30.0, max_loss_points=0.3)


class StudyRecorder(Hook):
    """Per-epoch training wall / CPU time and mean loss (the token stride it ended with)."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.epochs: List[Dict[str, Any]] = []
        self._t0 = self._c0 = 0.0
        self._losses: List[float] = []

    def before_train_epoch(self, runner) -> None:
        self._losses = []
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if outputs and 'loss' in outputs:
            loss = outputs['loss']
            self._losses.append(float(loss.detach() if hasattr(loss, 'detach') else loss))

    def after_train_epoch(self, runner) -> None:
        backbone = runner.model.backbone
        self.epochs.append(dict(epoch=runner.epoch, train_s=time.perf_counter() - self._t0,
                                train_cpu_s=time.process_time() - self._c0,
                                loss=sum(self._losses) / max(len(self._losses), 1),
                                last_token_stride=getattr(backbone, 'token_stride', 1)))


def schedule(opts: Any) -> List[List[int]]:
    return [[0, opts.factor], [opts.switch_epoch, 1]]


def settings(opts: Any, arm: str) -> Dict[str, Any]:
    """What decides an arm's result besides the seed (its trial key)."""
    out = dict(config=osp.basename(opts.config), config_sha=seeded.file_digest(opts.config),
               rule_sha=seeded.file_digest(opts.rule) if opts.rule else None,
               epochs=opts.epochs, train=opts.train_images, val=opts.val_images,
               batch=opts.batch_size)
    if arm == 'progressive':
        out['schedule'] = schedule(opts)
    return out


def run_one(opts: Any, arm: str, seed: int, say: Any) -> Dict[str, Any]:
    """Train one arm with one seed, test once; per-epoch and total training times."""
    size = dict(epochs=opts.epochs, train=opts.train_images, val=opts.val_images,
                batch=opts.batch_size)
    work_dir = osp.join(opts.out_dir, 'trials', arm, f'seed{seed}')
    cfg = configure(load_config(opts.config, opts.rule), get_task('cls'), size, seed, work_dir,
                    opts.data_root)
    if arm == 'progressive':
        cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + [dict(
            type='mmvitscale.ProgressiveTokenizationHook',
            schedule=[tuple(s) for s in schedule(opts)])]
    os.makedirs(work_dir, exist_ok=True)
    machine = machine_fingerprint()
    load_before = loadavg_text()
    say(f'{arm} seed {seed}: train {opts.epochs} ep x {opts.train_images} images ...')
    t_start = time.perf_counter()
    with open(osp.join(work_dir, 'host_output.log'), 'w') as log, \
            contextlib.redirect_stdout(log):
        recorder = StudyRecorder()
        # no checkpoints, no resume: the result is training time, which a resumed trial
        # would only have in part (a killed trial trains again from its start)
        done = train_and_test(cfg, hooks=[recorder], resume=False, checkpoints=False)
        wall = done.build_s + done.train_s
        metrics, eval_s = done.metrics, done.eval_s
    if 'accuracy/top1' not in metrics:
        raise RuntimeError(f'the evaluator gave no accuracy/top1: {sorted(metrics)}')
    epochs = recorder.epochs
    row = dict(schedule=schedule(opts) if arm == 'progressive' else None, epochs=epochs,
               load_before=load_before, load_after=loadavg_text(), machine=machine,
               metrics=dict(top1=float(metrics['accuracy/top1']),
                            train_s=sum(e['train_s'] for e in epochs),
                            train_cpu_s=sum(e['train_cpu_s'] for e in epochs)),
               timings=dict(wall_s=wall, eval_s=eval_s, total_s=time.perf_counter() - t_start))
    del done
    say(f"{arm} seed {seed}: top-1 {row['metrics']['top1']:.2f}%, training "
        f"{row['metrics']['train_s']:.1f} s wall, {row['metrics']['train_cpu_s']:.1f} s CPU")
    return row


def target(summary: Mapping[str, Any]) -> Dict[str, Any]:
    """Whether the progressive schedule saves >= 30% training wall time (mean over seeds)
    while losing <= 0.3 top-1 points, the loss bounded by the 95% interval's low end;
    ``met=None`` without an interval (one seed)."""
    comps = {c['metric']: c for c in summary['comparisons']}
    acc, wall = comps['top1'], comps['train_s']
    low = acc['ci95'][0]
    met = None if low is None else bool(wall['diff_mean'] >= TARGET['saved_pct']
                                        and low >= -TARGET['max_loss_points'])
    if met is None:
        text = (f"target (>= {TARGET['saved_pct']:.0f}% saved at <= "
                f"{TARGET['max_loss_points']} points lost): not decidable from one seed "
                '(no interval)')
    else:
        text = (f"target (>= {TARGET['saved_pct']:.0f}% training wall time saved on average, "
                f"top-1 interval's low end >= -{TARGET['max_loss_points']} points): "
                f"{'met' if met else 'not met'} ({wall['diff_mean']:.1f}% saved, low end "
                f'{low:+.2f} points)')
    return dict(met=met, text=text, **TARGET)


def summarize(rows: Sequence[Mapping[str, Any]], seeds: Sequence[int],
              meta: Mapping[str, Any]) -> Dict[str, Any]:
    summary = seeded.summarize_arms(rows, ARMS, seeds, [('progressive', 'plain')], METRICS,
                                    labels=LABELS, meta=meta)
    summary['target'] = target(summary)
    return summary


def to_markdown(summary: Mapping[str, Any]) -> str:
    m, mach = summary['meta'], summary['machine']
    load = mach['loadavg_1min']
    seeds = summary['seeds']
    lines = ['# Progressive re-tokenization on offline Fashion-MNIST', '',
             f"`{m['command']}`", '',
             f"Config `{m['config']}`, rule `{m['rule']}`; {m['train_images']} train images, "
             f"{m['val_images']} test images, {m['epochs']} epochs, batch {m['batch_size']}; "
             f"progressive schedule {m['schedule']} (epoch, token stride factor); seeds "
             f"{seeds} (paired: both arms train with the same seeds); torch threads "
             f"{', '.join(str(t) for t in mach['threads'])}, {', '.join(mach['cpu'])} "
             f"({m['cpus']} CPUs, shared); 1-min load average "
             + (f'{load[0]:.2f} to {load[1]:.2f}' if load else 'n/a')
             + f" over {mach['trials']} trials. Training time excludes testing; CPU time is "
             'the load-robust proxy. Intervals: '
             f"{summary['confidence']:.0%} Student t over seeds; time saved is per seed "
             '`100 * (plain - progressive) / plain`.', '']
    lines += seeded.arms_markdown(summary)
    lines += ['', '## Per trial', '',
              '| arm | seed | train wall (s) | wall per epoch (s) | train CPU (s) | top-1 % '
              '| load before / after |', '|---|---:|---:|---|---:|---:|---|']
    for a in summary['arms']:
        for p in a['per_seed']:
            per = ', '.join(f"{e['train_s']:.1f}" for e in p['epochs'])
            lines.append(f"| {a['label']} | {p['seed']} | {p['metrics']['train_s']:.1f} | {per} "
                         f"| {p['metrics']['train_cpu_s']:.1f} | {p['metrics']['top1']:.2f} | "
                         f"{p['load_before']} / {p['load_after']} |")
    lines += ['', f"Target {summary['target']['text'][len('target '):]}."]
    lines += seeded.few_seeds_note(seeds)
    return '\n'.join(lines) + '\n'


def write_report(summary: Mapping[str, Any], out_dir: str) -> Dict[str, str]:
    m = summary['meta']
    return seeded.write_seeded_report(summary, out_dir, NAME, to_markdown(summary),
                                      f"re-tokenization, {m['epochs']} ep x "
                                      f"{m['train_images']} imgs, seeds {summary['seeds']}")


def run_study(opts: Any, say: Any, command: Optional[str] = None) -> Dict[str, Any]:
    """Run (or resume) the study the tool's arguments describe; write the report.

    After each trial the report covers the seeds both arms have finished; finished trials are
    kept in ``<out_dir>/trials.jsonl`` and skipped when rerun.
    """
    import torch
    seeds = seeded.check_seeds(opts.seeds)
    meta = dict(command=command or NAME, config=rel_path(opts.config),
                rule=rel_path(opts.rule) if opts.rule else "config's own", epochs=opts.epochs,
                switch_epoch=opts.switch_epoch, factor=opts.factor, schedule=schedule(opts),
                train_images=opts.train_images, val_images=opts.val_images,
                batch_size=opts.batch_size, cpus=os.cpu_count(), torch=torch.__version__)
    os.makedirs(opts.out_dir, exist_ok=True)
    ensure_data(get_task('cls'), opts.data_root,
                dict(train=opts.train_images, val=opts.val_images))

    def progress(rows: List[Dict[str, Any]]) -> None:
        done = seeded.complete_seeds(rows, ARMS, seeds)
        if done:
            write_report(summarize(rows, done, meta), opts.out_dir)

    rows = seeded.run_arms(NAME, ARMS, seeds, lambda a: settings(opts, a),
                           lambda a, s: run_one(opts, a, s, say), opts.out_dir, say=say,
                           on_row=progress)
    summary = summarize(rows, seeds, meta)
    write_report(summary, opts.out_dir)
    return summary
