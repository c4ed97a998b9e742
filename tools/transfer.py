"""Scaling-transfer study: do scaling rules beat the baseline shape at equal cost, with seeds?

    python tools/transfer.py [--rules R1.py R2.py ...] [--baseline B.py]
        [--tasks cls cls_pit] [--seeds 0 1 2 3] [--workers 2] [--quick]
        [--correction bonferroni|none]
        [--out-dir work_dirs/transfer] [--epochs N] [--cls-train N] [--det-epochs N] ...
        [--launcher slurm --partition P --cpus-per-trial C --gpus-per-trial G
         --sbatch-args="..." --dry-run]

Every rule (and the baseline) trains on every task with every seed (paired design: arms of
a task share their seeds). On the source task (the first of ``--tasks``) each rule's paired
per-seed difference to the baseline gets a 95% Student-t interval and a family-wise one
(Bonferroni over the rules compared on that task) that its verdict follows; the winner is
the rule whose verdict interval lies above 0 at equal FLOPs; on each target task the same
rules run with the same seeds, and the report gives the winner's difference there and
Kendall tau (with its p-value) between the rules' means on the source and on the target.
Verdict words follow the intervals (docs: ../shared/docs/studies.md, norm 3).

Trials are recorded in ``<out-dir>/trials.jsonl`` as they finish; rerunning the same command
after a crash skips finished trials and writes the same report: ``transfer.json``,
``transfer.md`` and ``transfer.png``. The logic lives in :mod:`mmvitscale.experiments`.
With ``--launcher slurm`` every trial is a Slurm job (one job array per run) and this command
waits for them; rerunning it resubmits only missing or failed trials
(:mod:`mmvitscale.experiments.slurm`).
"""
import argparse
import os.path as osp
import sys
from typing import Any, Dict, Optional, Sequence

import mmvitscale  # noqa: F401  (stack shims + registries, before any host import)
from mmvitscale.errors import InputError
from mmvitscale.experiments import TASKS, TaskError, run_grid_study
from mmvitscale.experiments.study import check_study_inputs
from mmvitscale.experiments.slurm import SlurmError
from mmvitscale.experiments.slurm import add_launcher_args, launcher_from_args
from mmvitscale.experiments.tasks import ROOT, SCALING_DIR

OFFLINE = [name for name, spec in TASKS.items() if spec.offline]
# The default study: the source and the PiT variant, 4 seeds (about 18 minutes on 2 cores).
# det and video (``--tasks cls cls_pit det video``, ``make demo-all``) are opt-in: at their
# schedules video is saturated and det on the steep start of its curve (README).
DEFAULT_TASKS = ['cls', 'cls_pit']
# At 0.97-1.01x the baseline's FLOPs on the source: one hand-written rule and the scaling
# search's two best candidates by As-ViT's proxies (the command is in each file)
DEFAULT_RULES = [osp.join(SCALING_DIR, f'{n}.py')
                 for n in ('deeper_narrower_mild', 'search_proxy_top1', 'search_deeper_lowres')]
DEFAULT_BASELINE = osp.join(SCALING_DIR, 'deit_tiny_shape.py')
QUICK = dict(epochs=1, train=256, val=128, batch=32)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--rules', nargs='+', default=DEFAULT_RULES,
                        help='scaling rule files to compare with the baseline')
    parser.add_argument('--rule', dest='rules', nargs=1, help='one rule file (= --rules R)')
    parser.add_argument('--baseline', default=DEFAULT_BASELINE, help='baseline rule file')
    parser.add_argument('--tasks', nargs='+', choices=sorted(TASKS), default=DEFAULT_TASKS,
                        help='tasks; the first is the source the rules are ranked on')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3],
                        help='seeds of every arm (default 4: about 18 min with --workers 2 on 2 '
                        'cores; how often two runs agree by seed count: README, '
                        'Reproducibility)')
    parser.add_argument('--quick', action='store_true',
                        help=f'smoke run: every task at {QUICK} unless set per task')
    parser.add_argument('--out-dir', default='work_dirs/transfer', help='report folder')
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data'),
                        help='folder holding fashion_mnist/, fmnist_det/, fmnist_video_hard/')
    parser.add_argument('--epochs', type=int, default=None,
                        help='training epochs for every task (overrides --TASK-epochs)')
    for name in OFFLINE:
        d = TASKS[name].defaults
        unit = TASKS[name].unit
        parser.add_argument(f'--{name}-epochs', type=int, default=None,
                            help=f'{name}: training epochs (default {d["epochs"]})')
        parser.add_argument(f'--{name}-train', type=int, default=None,
                            help=f'{name}: training {unit}, first N (default {d["train"]})')
        parser.add_argument(f'--{name}-val', type=int, default=None,
                            help=f'{name}: evaluation {unit}, first N (default {d["val"]})')
        parser.add_argument(f'--{name}-batch', type=int, default=None,
                            help=f'{name}: batch size (default {d["batch"] or "the config"})')
    parser.add_argument('--correction', choices=['bonferroni', 'none'], default='bonferroni',
                        help="per task, verdicts follow intervals that hold together for all "
                        "the rules compared with the baseline ('bonferroni', default: the "
                        "study names a winner among them) or each its own 95%% interval")
    parser.add_argument('--tolerance', type=float, default=0.05,
                        help='equal cost: backbone FLOPs within this fraction of the baseline')
    parser.add_argument('--det-score-thr', type=float, default=0.01,
                        help='detection test score threshold (low: short runs still score)')
    parser.add_argument('--latency-backends', nargs='+', default=['eager', 'onnxruntime'],
                        help='backends timed at batch 1 after training (those available here)')
    parser.add_argument('--latency-rounds', type=int, default=3,
                        help='rounds alternating the arms of a task (0: no latency)')
    parser.add_argument('--latency-repeats', type=int, default=20,
                        help='timed runs per arm and round')
    parser.add_argument('--workers', type=int, default=1,
                        help='trials run in parallel (processes; 2 on a 2-core machine)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads per worker')
    add_launcher_args(parser)
    return parser.parse_args(argv)


def sizes(args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """Per task: the command line's epochs / train / val / batch (None: task default)."""
    out = {}
    for name in args.tasks:
        size = dict(QUICK) if args.quick and TASKS[name].offline else {}
        for key in ('epochs', 'train', 'val', 'batch'):
            value = getattr(args, f'{name}_{key}', None)
            if value is not None:
                size[key] = value
        if args.epochs is not None:
            size['epochs'] = args.epochs
        out[name] = size
    return out


def check_args(args: argparse.Namespace) -> None:
    """Errors that name the flag and value, before any data or training."""
    for path, flag in [(p, '--rules') for p in args.rules] + [(args.baseline, '--baseline')]:
        if not osp.isfile(path):
            raise SystemExit(f'transfer.py: error: {flag} {path}: rule file not found')
    for name, size in sizes(args).items():
        for key, value in size.items():
            if value is not None and value < 1:
                raise SystemExit(f'transfer.py: error: --{name}-{key} must be >= 1, '
                                 f'got {value}')
    try:  # repeated tasks, seeds, unknown latency backends, --out-dir / --data-root
        check_study_inputs(args.tasks, args.seeds, args.latency_backends, args.out_dir,
                           args.data_root)
    except InputError as err:  # named by the flag the user typed
        flag = err.format(lambda name: '--' + name.replace('_', '-'))
        raise SystemExit(f'transfer.py: error: {flag}') from None
    if not 0 <= args.tolerance < 1:
        raise SystemExit(f'transfer.py: error: --tolerance must be in [0, 1), '
                         f'got {args.tolerance}')
    if args.latency_rounds < 0 or args.latency_repeats < 1:
        raise SystemExit(f'transfer.py: error: --latency-rounds must be >= 0 and '
                         f'--latency-repeats >= 1, got {args.latency_rounds} and '
                         f'{args.latency_repeats}')
    if args.workers < 1 or args.threads < 1:
        raise SystemExit(f'transfer.py: error: --workers and --threads must be >= 1, got '
                         f'{args.workers} and {args.threads}')
    from mmvitscale.experiments.study import applicability
    try:
        applicability([], list(args.rules))  # each is a rule file (any task may skip it)
        skip = applicability(list(dict.fromkeys(args.tasks)), [args.baseline])
    except ValueError as err:
        raise SystemExit(f'transfer.py: error: {err}') from err
    if skip:  # a rule that cannot build a task is skipped there; the baseline must build all
        name, why = next((t, next(iter(v.values()))) for t, v in skip.items())
        raise SystemExit(f'transfer.py: error: --baseline {args.baseline} does not apply to '
                         f'task {name}: {why}')


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    check_args(args)
    launcher = launcher_from_args(args, 'transfer.py', job_name='transfer')
    rel = [osp.relpath(osp.abspath(p), ROOT) for p in [args.baseline] + list(args.rules)]
    rel = [r if not r.startswith('..') else osp.abspath(p)
           for r, p in zip(rel, [args.baseline] + list(args.rules))]
    meta = dict(description=(
        f'Scaling transfer: rules {", ".join(rel[1:])} vs baseline {rel[0]}; source task '
        f'{args.tasks[0]}, targets {", ".join(args.tasks[1:]) or "none"}.'),
        sizes=sizes(args), quick=args.quick)
    try:
        summary = run_grid_study(
            args.tasks, list(args.rules), args.baseline, args.seeds, args.out_dir,
            args.data_root, name='transfer', title='Scaling transfer', sizes=sizes(args),
            det_score_thr=args.det_score_thr, workers=args.workers, threads=args.threads,
            tolerance=args.tolerance, correction=args.correction, meta=meta,
            latency_backends=args.latency_backends,
            latency_rounds=args.latency_rounds, latency_repeats=args.latency_repeats,
            launcher=launcher)
    except (TaskError, SlurmError) as err:
        raise SystemExit(f'transfer.py: error: {err}') from err
    for line in summary['headline']:
        print(line, file=sys.__stdout__)
    print(f'wrote {osp.join(args.out_dir, "transfer")}.json, .md and .png', file=sys.__stdout__)
    return summary


if __name__ == '__main__':
    main()
