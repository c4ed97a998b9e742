"""Scaling-transfer study: do scaling rules beat the baseline shape at equal cost, with seeds?

    python tools/transfer.py [--rules R1.py ...] [--baseline B.py] [--tasks cls cls_pit det
        video] [--seeds 0 1 2] [--match flops|latency|none] [--workers 2] [--quick] ...

Every rule (and the baseline) trains on every task with every seed (paired design). On each
task a rule is first re-matched to that task baseline's cost by solving its width
(``--match``, within ``--tolerance``; :mod:`mmvitscale.cost.matching`). Per task, each rule's
paired difference to the baseline gets a 95% and a family-wise (Bonferroni) interval that its
verdict follows; per target, the source winner's difference there and the effect transfer
(Kendall tau and Pearson r between the rules' effects on source and target, intervals by
resampling seeds). Trials are kept in ``<out-dir>/trials.jsonl`` (a rerun skips finished ones)
and the report is ``transfer.{json,md,png}`` plus the rules x tasks ``transfer_matrix.png``.
``--launcher slurm``: every trial is a Slurm job (:mod:`mmvitscale.experiments.slurm`).
"""
import argparse
import os.path as osp
import sys
from typing import Any, Dict, Optional, Sequence

import mmvitscale  # noqa: F401  (stack shims + registries, before any host import)
from mmvitscale.errors import InputError
from mmvitscale.experiments import TASKS, TaskError, run_grid_study
from mmvitscale.experiments.study import (MATCH_MODES, add_size_args, check_study_inputs,
                                          sizes_from_args)
from mmvitscale.experiments.slurm import SlurmError
from mmvitscale.experiments.slurm import add_launcher_args, launcher_from_args
from mmvitscale.experiments.tasks import ROOT, SCALING_DIR

# The default study (timed in docs/results/transfer.md): the search's two winners by As-ViT's
# proxies and shapes spanning the space, each re-matched to every task's cost.
DEFAULT_TASKS = ['cls', 'cls_pit', 'det', 'video']
DEFAULT_RULES = [osp.join(SCALING_DIR, f'{n}.py') for n in (
    'search_proxy_top1', 'search_deeper_lowres', 'shape_deep_narrow', 'shape_smallpatch_lowres')]
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
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                        help='seeds of every arm (timings: docs/results/transfer.md)')
    parser.add_argument('--match', choices=MATCH_MODES, default='flops',
                        help="equal cost on every task: solve each rule's width to the task "
                        "baseline's backbone FLOPs or measured eager latency; 'none': the "
                        'rule files as written')
    parser.add_argument('--out-dir', default='work_dirs/transfer', help='report folder')
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data'),
                        help='folder holding fashion_mnist/, fmnist_det/, fmnist_video_hard/')
    add_size_args(parser, QUICK)
    parser.add_argument('--correction', choices=['bonferroni', 'none'], default='bonferroni',
                        help="per task, verdicts follow intervals holding together for all "
                        "its rules ('bonferroni') or each its own 95%% interval")
    parser.add_argument('--tolerance', type=float, default=0.05,
                        help="equal cost: within this fraction of the task baseline's cost")
    parser.add_argument('--det-score-thr', type=float, default=0.01,
                        help='detection test score threshold (low: short runs still score)')
    parser.add_argument('--latency-backends', nargs='+', default=['eager'],
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
    try:
        return sizes_from_args(args, QUICK)
    except TaskError as err:
        raise SystemExit(f'transfer.py: error: {err}') from None


def check_args(args: argparse.Namespace) -> None:
    """Errors that name the flag and value, before any data or training."""
    for path, flag in [(p, '--rules') for p in args.rules] + [(args.baseline, '--baseline')]:
        if not osp.isfile(path):
            raise SystemExit(f'transfer.py: error: {flag} {path}: rule file not found')
    sizes(args)
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
    rel = [p if r.startswith('..') else r for r, p in (
        (osp.relpath(osp.abspath(p), ROOT), osp.abspath(p)) for p in [args.baseline, *args.rules])]
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
            launcher=launcher, match=args.match)
    except (TaskError, SlurmError) as err:
        raise SystemExit(f'transfer.py: error: {err}') from err
    for line in summary['headline']:
        print(line, file=sys.__stdout__)
    print(f'wrote {osp.join(args.out_dir, "transfer")}.json, .md, .png and _matrix.png',
          file=sys.__stdout__)
    return summary


if __name__ == '__main__':
    main()
