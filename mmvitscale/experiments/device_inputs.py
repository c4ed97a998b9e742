"""The inputs and the console summary of ``tools/device_transfer.py``: its flags checked before
any measurement (:func:`check_transfer_args`, with the flag each package argument has,
:func:`flag`), the measurement spec they name (:func:`measure_spec`) and one line per pair of
settings and per budget (:func:`summary_lines`).
"""
import os.path as osp
from typing import Any, List, Mapping, Optional, Tuple

from .device_measure import MeasureSpec, check_measure_spec
from .device_ranking import LatencyMatrix, check_report_inputs, read_matrix

__all__ = ['FLAGS', 'flag', 'all_tables', 'measure_spec', 'check_transfer_args',
           'summary_lines', 'loadavg']

# package argument names whose flag is not ``--`` + the name with dashes
FLAGS = dict(tables='TABLE', budget_quantiles='--budget-quantile')


def flag(name: str) -> str:
    """The command-line flag of a package argument name."""
    return FLAGS.get(name, '--' + name.replace('_', '-'))


def all_tables(args: Any) -> List[str]:
    """The tables the report reads: the TABLEs and, with ``--measure``, ``--table``."""
    return list(args.tables) + ([args.table] if args.measure else [])


def measure_spec(args: Any) -> MeasureSpec:
    """The measurement the ``--measure`` flags name."""
    return MeasureSpec(rules=args.rules, num_random=args.num_random, seed=args.seed,
                       arch=args.arch, img_size=args.img_size, patch_size=args.patch_size,
                       backends=args.backends, compile_max_archs=args.compile_max_archs,
                       threads=args.threads, rounds=args.rounds, repeats=args.repeats,
                       warmup=args.warmup)


def check_transfer_args(args: Any) -> Tuple[Optional[LatencyMatrix], Optional[MeasureSpec]]:
    """Check every input before any measurement (``ValueError``, or an ``InputError`` whose
    names :func:`flag` turns into the user's flags).

    Fills in ``args.budget_quantile`` and, with ``--measure``, ``args.table``. Returns the
    checked :class:`LatencyMatrix` of the tables without ``--measure``, else the checked
    :class:`MeasureSpec`.
    """
    if not args.tables and not args.measure:
        raise ValueError('give one or more latency TABLEs, or --measure')
    args.budget_quantile = check_report_inputs(args.tables, args.scores, args.budget_quantile,
                                               args.budget_ms)
    if not args.measure:
        return read_matrix(args.tables, args.stat, args.reduce, args.fingerprints,
                           args.scatter), None
    args.table = args.table or osp.join(args.out_dir, 'table.jsonl')
    spec = measure_spec(args)
    check_measure_spec(spec, args.tables, args.fingerprints)
    return None, spec


def loadavg() -> List[str]:
    """The 1, 5 and 15 minute load averages, as ``/proc/loadavg`` writes them."""
    with open('/proc/loadavg') as f:
        return f.read().split()[:3]


def summary_lines(report: Mapping[str, Any]) -> List[str]:
    """One console line (rich markup) per pair of settings (tau, noise floors, rank differences
    beyond them) and per budget (each setting's winner, whether it changes)."""
    lines: List[str] = []
    for p in report['pairs']:
        na, nb = (f'{v:.1f}%' if v is not None else '?' for v in p['noise_floor_pct'])
        within = (' (every rank difference within the noise floor)' if p['discordant']
                  and p['within_noise'] else f" ({p['discordant'] - p['discordant_within_noise']}"
                  f" of {p['discordant']} discordant pairs beyond the noise floor)"
                  if p['discordant'] else '')
        lines.append(f"tau {p['a']} vs {p['b']}: {p['tau']:.3f} (n={p['n']}, noise floor "
                     f'{na} / {nb}){within}')
    for b in report['budgets']:
        winners = ', '.join(f"{k}: {v['winner']}" for k, v in b['per_setting'].items())
        lines.append(f"budget {b['name']}: {winners}"
                     + (' [bold]-> winner changes[/bold]' if b['winner_changes'] else ''))
    return lines
