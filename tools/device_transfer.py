"""Device-transfer report: latency-rank agreement and budgeted winners across settings.

    python tools/device_transfer.py TABLE [TABLE ...] [--fingerprints ID ...]
        [--budget-quantile 0.5 ...] [--budget-ms 40 ...] [--scores SCORES.json]
        [--stat median_ms|p10_ms|min_ms|mean_ms] [--reduce min|median] [--scatter A B]
        [--out-dir work_dirs/device_transfer] [--name report]
    python tools/device_transfer.py --measure [--rules RULE ...] [--num-random 6] [--seed 0]
        [--arch deit-tiny] [--backends eager onnxruntime [compile]] [--compile-max-archs 5]
        [--threads 1] [--rounds 3] [--repeats 5] [--warmup 0.3] [--table OUT_DIR/table.jsonl]

A setting is one latency-table fingerprint (device, backend, threads, versions). For every pair
of settings the report gives Kendall's tau-b of their latency rankings over the architectures
both measured; for each budget (``--budget-quantile q``: the q-quantile of each setting's
latencies; ``--budget-ms``: the same ms on every setting; default ``--budget-quantile 0.5``)
the best architecture under it per setting, by FLOPs or by ``--scores`` (JSON ``{label:
score}`` or ``[{"arch": {...}, "score": x}]``, bigger is better), and whether the winner changes
between settings. Writes ``<out-dir>/<name>.md``, ``.json`` and ``.png`` (tau heatmap and the
latency scatter of the least-agreeing pair, or ``--scatter A B``), atomically. Each setting
has a noise floor (median run-to-run spread of its latencies) and each pair says how many of
its rank differences lie within it.

``--measure`` first measures the scaling rules (default: every ``configs/_base_/scaling/*.py``
plus ``--num-random`` seeded random rules) applied to ``--arch`` at batch 1 on each backend
(compile only on the first ``--compile-max-archs`` archs: its set-up takes tens of seconds)
and appends the rows, labelled by rule, to ``--table``; the report then reads ``--table`` and
any TABLEs given. All inputs are checked before any measurement.
"""
import argparse
import os.path as osp
import sys
import time
from typing import Any, Dict

import mmvitscale  # noqa: F401  (shims before mmengine / host packages)
from rich.console import Console

from mmvitscale.errors import flag_errors, folder_arg
from mmvitscale.experiments.device_inputs import (all_tables, check_transfer_args, flag,
                                                  loadavg, summary_lines)
from mmvitscale.experiments.device_measure import measure_archs
from mmvitscale.experiments.device_ranking import (REDUCE, STATS, TransferError, load_scores,
                                                   read_matrix, transfer_report, write_report)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=osp.basename(__file__),
                                description=__doc__.splitlines()[0])
    p.add_argument('tables', nargs='*', metavar='TABLE', help='latency tables (JSON lines)')
    p.add_argument('--fingerprints', nargs='+', default=None,
                   help='fingerprint ids (or unique prefixes) to compare (default: all)')
    p.add_argument('--stat', default='median_ms', choices=STATS, help='row latency statistic')
    p.add_argument('--reduce', default='min', choices=REDUCE,
                   help='how repeated rows of one (setting, arch) are combined')
    p.add_argument('--budget-quantile', nargs='+', type=float, default=None,
                   help='budgets as quantiles of each setting\'s latencies (default 0.5)')
    p.add_argument('--budget-ms', nargs='+', type=float, default=[],
                   help='absolute budgets in ms, the same on every setting')
    p.add_argument('--scores', default=None, help='per-arch score JSON (default: FLOPs)')
    p.add_argument('--scatter', nargs=2, default=None, metavar=('A', 'B'),
                   help='setting names for the scatter (default: the lowest-tau pair)')
    p.add_argument('--out-dir', default='work_dirs/device_transfer', type=folder_arg)
    p.add_argument('--name', default='report', help='output file stem')
    m = p.add_argument_group('measure mode')
    m.add_argument('--measure', action='store_true', help='measure the rules first')
    m.add_argument('--rules', nargs='+', default=None,
                   help='rule files (default: configs/_base_/scaling/*.py)')
    m.add_argument('--num-random', type=int, default=6, help='extra seeded random rules')
    m.add_argument('--seed', type=int, default=0)
    m.add_argument('--arch', default='deit-tiny', help='ViT preset the rules scale')
    m.add_argument('--img-size', type=int, default=224)
    m.add_argument('--patch-size', type=int, default=16)
    m.add_argument('--backends', nargs='+', default=['eager', 'onnxruntime'])
    m.add_argument('--compile-max-archs', type=int, default=5,
                   help='measure the compile backend on this many archs only')
    m.add_argument('--threads', type=int, default=1, help='torch / onnxruntime threads')
    m.add_argument('--rounds', type=int, default=3,
                   help='round-robin passes over the archs (noise floor: spread of the rounds)')
    m.add_argument('--repeats', type=int, default=5, help='timed runs per arch and round')
    m.add_argument('--warmup', type=float, default=0.3, help='warm-up seconds')
    m.add_argument('--table', default=None, help='table to append to (default '
                   'OUT_DIR/table.jsonl)')
    return p


def main(argv=None) -> Dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    with flag_errors(parser, rename=flag):
        matrix, spec = check_transfer_args(args)
    console = Console(soft_wrap=True)
    t0, load_before = time.perf_counter(), loadavg()
    run: Dict[str, Any] = {}
    if args.measure:
        def on_result(label: str, backend: str, res: Dict[str, Any]) -> None:
            console.print(f'{label:<32} {backend:<12} median {res["median_ms"]:8.2f} ms  '
                          f'p10-p90 {res["p10_ms"]:.2f}-{res["p90_ms"]:.2f} ms  '
                          f'noise {res["noise_pct"]:4.1f}%')

        def on_failure(label: str, backend: str, err: Exception) -> None:
            console.print(f'[red]failed:[/red] {label} {backend}: {err}')

        run = measure_archs(spec, args.table, on_result=on_result, on_failure=on_failure)
        with flag_errors(parser, rename=flag):
            matrix = read_matrix(all_tables(args), args.stat, args.reduce, args.fingerprints,
                                 args.scatter)
    try:
        scores = load_scores(args.scores, matrix) if args.scores else None
    except ValueError as err:
        parser.error(f'--scores: {err}')
    with flag_errors(parser, TransferError):  # after the checks, only from a racing writer
        report = transfer_report(matrix, scores, args.budget_quantile, args.budget_ms,
                                 score_name='scores:' + args.scores if args.scores else 'flops')
    report['run'] = dict(tables=all_tables(args), argv=sys.argv[1:] if argv is None else argv,
                         wall_s=time.perf_counter() - t0, loadavg_before=load_before,
                         loadavg_after=loadavg(), **run)
    paths = write_report(report, args.out_dir, args.name, tuple(args.scatter or ()) or None)
    for line in summary_lines(report):
        console.print(line)
    console.print(f"wrote {paths['md']}, {paths['json']}, {paths['png']}")
    return report


if __name__ == '__main__':
    main()
