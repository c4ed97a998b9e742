"""Do two runs of one study (e.g. disjoint seed sets) give the same verdicts?

    python tools/analysis/study_agreement.py work_dirs/transfer/transfer.json \
        work_dirs/transfer_seeds345/transfer.json [--out work_dirs/agreement.md]

Prints (and with ``--out`` writes, plus ``.json`` beside it) one row per (task, rule)
comparison both reports hold: each run's verdict, mean difference and 95% interval, and whether
the verdicts agree; first the count of agreeing and of opposite (better vs worse) verdicts.
The logic is :func:`mmvitscale.experiments.report.agreement`.

    python tools/analysis/study_agreement.py work_dirs/transfer_seeds0to9/transfer.json \
        --seeds-per-run 3 4 5 [--draws 2000] [--correction bonferroni none]

With ``--seeds-per-run`` (one pooled report instead of two runs): how often two disjoint runs
of that many seeds would agree, by splitting the pooled seeds at random
(:func:`mmvitscale.experiments.report.expected_agreement`): an estimate for choosing a
study's default seeds and correction.
"""
import argparse
import json
import os.path as osp
from typing import Any, Dict, Optional, Sequence, Tuple

from mmvitscale.experiments.report import (agreement, agreement_markdown, expected_agreement,
                                           write_json)
from mmvitscale.fileio import atomic_write


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('first', help="a study's JSON report (e.g. transfer.json)")
    p.add_argument('second', nargs='?', help='another run of the same study')
    p.add_argument('--seeds-per-run', type=int, nargs='+', default=None,
                   help='instead of SECOND: resample FIRST (a pooled report) into two '
                   'disjoint runs of this many seeds')
    p.add_argument('--draws', type=int, default=2000, help='random splits per setting')
    p.add_argument('--correction', nargs='+', choices=['bonferroni', 'none'],
                   default=['bonferroni', 'none'], help='verdict intervals to compare')
    p.add_argument('--out', default=None, help='Markdown file to write (JSON beside it)')
    args = p.parse_args(argv)
    if args.out is not None and not args.out.endswith('.md'):
        p.error(f'--out must end in .md, got {args.out}')
    if (args.second is None) == (args.seeds_per_run is None):
        p.error('give either SECOND (a second run) or --seeds-per-run (resample FIRST)')
    reports = []
    for flag, path in (('first', args.first), ('second', args.second)):
        if path is None:
            continue
        try:
            with open(path, encoding='utf-8') as f:
                report = json.load(f)
        except (OSError, ValueError) as err:
            p.error(f'{flag} {path}: cannot read a JSON report: {err}')
        if not isinstance(report, dict) or 'comparisons' not in report:
            p.error(f'{flag} {path}: not a study report (no "comparisons")')
        reports.append(report)
    if args.seeds_per_run is not None:
        result, text = _resampled(p, reports[0], args)
    else:
        try:
            result = agreement(*reports)
        except ValueError as err:
            p.error(str(err))
        text = agreement_markdown(result, [osp.relpath(args.first), osp.relpath(args.second)])
    print(text, end='')
    if args.out:
        write_json(args.out[:-3] + '.json', result)
        atomic_write(args.out, text)
        print(f'wrote {args.out} and {args.out[:-3]}.json')
    return result


def _resampled(p: argparse.ArgumentParser, pooled: Dict[str, Any],
               args: argparse.Namespace) -> Tuple[Dict[str, Any], str]:
    if any(not {'task', 'rule', 'seeds', 'metrics'} <= set(a) for a in pooled.get('arms', [])):
        p.error(f'first {args.first}: --seeds-per-run needs a transfer-study report (arms with '
                'task, rule, seeds and metrics)')
    if len(pooled.get('seeds', [])) < 4:
        p.error(f"first {args.first}: --seeds-per-run needs a report with at least 4 seeds, got "
                f"{len(pooled.get('seeds', []))}")
    rows = []
    for k in args.seeds_per_run:
        for correction in args.correction:
            try:
                rows.append(expected_agreement(pooled, k, args.draws, correction))
            except ValueError as err:
                if 'seeds_per_run' in str(err):
                    p.error(f'--seeds-per-run {k}: {err}')
                if str(err).startswith('draws'):
                    p.error(f'--draws {args.draws}: {err}')
                p.error(f'first {args.first}: {err}')
    n = rows[0]['comparisons']
    lines = [f"Two disjoint runs drawn from the {len(pooled['seeds'])} seeds of "
             f'{osp.relpath(args.first)} ({args.draws} random splits per row; the splits share '
             'seeds, so this estimates, it does not test):', '',
             f'| seeds per run | verdict interval | mean verdicts agreeing (of {n}) | all '
             f'{n} agree | some opposite | mean verdicts not inconclusive, per run |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['seeds_per_run']} | {r['correction']} | {r['mean_agreed']:.2f} | "
                     f"{r['p_all_agree']:.0%} | {r['p_any_opposed']:.0%} | "
                     f"{r['mean_detected']:.2f} |")
    return dict(pooled=args.first, rows=rows), '\n'.join(lines) + '\n'


if __name__ == '__main__':
    main()
