"""Do two runs of one study (e.g. disjoint seed sets) give the same verdicts?

    python tools/analysis/study_agreement.py work_dirs/transfer/transfer.json \
        work_dirs/transfer_seeds345/transfer.json [--out work_dirs/agreement.md]

Prints (and with ``--out`` writes, plus ``.json`` beside it) one row per (task, rule)
comparison both reports hold: each run's verdict, mean difference and 95% interval, and whether
the verdicts agree; first the count of agreeing and of opposite (better vs worse) verdicts.
The logic is :func:`mmvitscale.experiments.report.agreement`.
"""
import argparse
import json
import os.path as osp
from typing import Any, Dict, Optional, Sequence

from mmvitscale.experiments.report import agreement, agreement_markdown, write_json
from mmvitscale.fileio import atomic_write


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('first', help="a study's JSON report (e.g. transfer.json)")
    p.add_argument('second', help='another run of the same study')
    p.add_argument('--out', default=None, help='Markdown file to write (JSON beside it)')
    args = p.parse_args(argv)
    if args.out is not None and not args.out.endswith('.md'):
        p.error(f'--out must end in .md, got {args.out}')
    reports = []
    for flag, path in (('first', args.first), ('second', args.second)):
        try:
            with open(path, encoding='utf-8') as f:
                report = json.load(f)
        except (OSError, ValueError) as err:
            p.error(f'{flag} {path}: cannot read a JSON report: {err}')
        if not isinstance(report, dict) or 'comparisons' not in report:
            p.error(f'{flag} {path}: not a study report (no "comparisons")')
        reports.append(report)
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


if __name__ == '__main__':
    main()
