"""Measure a backbone's latency per backend and append it to the latency table.

    python tools/analysis/benchmark_latency.py CONFIG [options]
    python tools/analysis/benchmark_latency.py --rule RULE_FILE [--arch deit-tiny] \
        [--family vit|pit] [options]
    python tools/analysis/benchmark_latency.py --arch deit-tiny [--family vit|pit] [options]

The backbone: :func:`mmvitscale.cost.backends.backbone_config`; each (backend, batch) measured
by :func:`mmvitscale.cost.protocol.measure_backends` and appended to the table under this
machine's fingerprint; ``--threads T`` pins threads and CPU affinity (restored after).
"""
import argparse
import os.path as osp
import sys
from typing import Any, Dict, List, Optional

import mmvitscale  # noqa: F401  (shims before mmengine / host packages)
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from mmvitscale.cost.backends import (BACKENDS, backbone_config, build_model, check_backend,
                                      describe_model, pinned)
from mmvitscale.cost.latency_table import append_rows, fingerprint, to_csv
from mmvitscale.cost.protocol import measure_backends


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', help='a config with model.backbone')
    parser.add_argument('--rule', help='a scaling rule file (defines `scaling = dict(...)`)')
    parser.add_argument('--arch', help='base preset for --rule (default deit-tiny / pit-ti)')
    parser.add_argument('--family', default='vit', help='vit (ScaledViT) or pit (ScaledPiT)')
    parser.add_argument('--backends', nargs='+', default=['eager', 'onnxruntime'],
                        help=f'any of {", ".join(BACKENDS)}')
    parser.add_argument('--batch', nargs='+', type=int, default=[1], help='batch sizes')
    parser.add_argument('--repeats', type=int, default=50, help='timed runs per measurement')
    parser.add_argument('--warmup', type=float, default=1.0, help='warm-up seconds')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:i]')
    parser.add_argument('--threads', type=int, default=None, help='torch / ORT CPU threads')
    parser.add_argument('--affinity', default='auto', choices=('auto', 'none'),
                        help='with --threads: pin to the first THREADS CPUs (auto) or not')
    parser.add_argument('--shape', nargs=2, type=int, metavar=('H', 'W'), default=None,
                        help='input resolution (default: the architecture\'s)')
    parser.add_argument('--fresh-process', action='store_true',
                        help='measure each (backend, batch) in a new Python process')
    parser.add_argument('--table', default='work_dirs/latency/table.jsonl',
                        help='JSON Lines latency table to append to')
    parser.add_argument('--csv', default=None, help='also export the whole table as CSV')
    args = parser.parse_args(argv)
    try:
        validate(args)
    except ValueError as err:
        parser.error(str(err))
    return args


def validate(args: argparse.Namespace) -> None:
    """ValueError naming the flag and value of the first bad input (before any work)."""
    from mmvitscale import families, rules
    if args.config is not None and (args.rule or args.arch):
        raise ValueError('give either CONFIG or --rule / --arch, not both')
    if args.config is None and not (args.rule or args.arch):
        raise ValueError('give CONFIG, or --rule RULE_FILE / --arch ARCH')
    if args.config is not None and not osp.isfile(args.config):
        raise ValueError(f'CONFIG: file not found: {args.config}')
    try:
        torch.device(args.device)
    except RuntimeError:
        raise ValueError(f'--device: invalid device {args.device!r}') from None
    if args.family not in families.family_names('image'):
        raise ValueError(f'--family: unknown family {args.family!r} (choose from '
                         f'{", ".join(families.family_names("image"))})')
    if args.rule is not None:
        try:
            rules.check_rule_file(args.rule)
        except ValueError as err:
            raise ValueError(f'--rule: {err}') from None
    for backend in args.backends:
        if backend not in BACKENDS:
            raise ValueError(f'--backends: unknown backend {backend!r} '
                             f'(choose from {", ".join(BACKENDS)})')
        try:
            check_backend(backend, args.device)
        except ValueError as err:
            raise ValueError(f'--backends {backend} / --device {args.device}: {err}') from None
    threads = [] if args.threads is None else [args.threads]
    for flag, values in (('--batch', args.batch), ('--repeats', [args.repeats]),
                         ('--threads', threads), ('--shape', args.shape or [])):
        bad = [v for v in values if v < 1]
        if bad:
            raise ValueError(f'{flag}: must be >= 1, got {bad[0]}')
    if args.warmup < 0:
        raise ValueError(f'--warmup: must be >= 0, got {args.warmup}')


def main(argv=None) -> List[Dict[str, Any]]:
    args = parse_args(argv)
    if not args.threads:
        return run(args, None)
    with pinned(args.threads, 'auto' if args.affinity == 'auto' else None) as pin:
        return run(args, pin['cpus'])


def run(args: argparse.Namespace, cpus: Optional[List[int]]) -> List[Dict[str, Any]]:
    """Measure and report (inside :func:`pinned` when ``--threads`` is given)."""
    torch.manual_seed(0)
    console = Console()
    try:
        cfg, scope = backbone_config(args.config, args.rule, args.arch, args.family)
        model = build_model(cfg, scope)
    except ValueError as err:
        console.print(f'[red]error:[/red] {err}')
        sys.exit(2)
    family, arch, shape = describe_model(model, cfg)
    if args.shape:
        shape = [shape[0], *args.shape]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task('measuring', total=len(args.backends) * len(args.batch))
        rows, failures = measure_backends(
            model, cfg, shape, args.backends, args.batch, args.repeats, args.warmup,
            args.device, args.fresh_process, scope, family, arch,
            dict(cpus=cpus, source=args.config or args.rule or args.arch),
            lambda what: progress.update(task, description=what, advance=1))
    append_rows(args.table, rows)
    if args.csv:
        to_csv(args.table, args.csv)
    fp0 = fingerprint(args.device, 'eager')
    table = Table(title=f'{family} {args.config or args.rule or args.arch} '
                  f'input {"x".join(map(str, shape))} on {fp0["device"]}, '
                  f'{fp0["threads"]} threads, torch {fp0["torch"]}')
    for col in ('backend', 'batch', 'median ms', 'p10 ms', 'p90 ms', 'img/s', 'setup s'):
        table.add_column(col, justify='left' if col == 'backend' else 'right')
    for r in rows:
        table.add_row(r['fingerprint']['backend'], str(r['batch_size']), f"{r['median_ms']:.2f}",
                      f"{r['p10_ms']:.2f}", f"{r['p90_ms']:.2f}",
                      f"{1e3 * r['batch_size'] / r['median_ms']:.1f}", f"{r['setup_s']:.1f}")
    console.print(table)
    console.print(f'appended {len(rows)} rows to {args.table}'
                  + (f' (CSV: {args.csv})' if args.csv else ''))
    for failure in failures:
        console.print(f'[red]failed:[/red] {failure}')
    if failures:
        sys.exit(1)
    return rows


if __name__ == '__main__':
    main()
