"""Budgeted scaling search for ScaledViT / ScaledPiT; writes the winner as a rule file.

    python tools/scale_search.py --budget 0.02 --out-rule configs/_base_/scaling/searched.py
    python tools/scale_search.py --cost latency --predictor work_dirs/latency_predictor/eager.json \
        --budget 30 --arch deit-tiny --img-size 224 --patch-size 16 --in-channels 3 --out-rule R
    python tools/scale_search.py --family pit --budget 0.005 --out-rule R

The base defaults to the offline Fashion-MNIST task's backbone
(``configs/cls/scaled_vit_fmnist.py``: embed 64, 6 layers, 2 heads, 32 px, patch 4, 1 channel;
with ``--family pit`` the PiT of ``scaled_pit_fmnist.py``), so the written rule drops into that
config. ``--budget`` is in GFLOPs (G multiply-accumulates of the backbone) with ``--cost flops``
and in ms with ``--cost latency`` (predicted by a ``LatencyPredictor`` JSON from
``tools/analysis/fit_latency_predictor.py``). ``--grid KEY=V1,V2,...`` replaces one knob's
multiplier grid (``--grid depth_mult=0.5,1,1.5``); ``--only-grid`` drops the default grids of
the knobs not given. ``--scorer proxies`` (As-ViT training-free proxies, default) or ``flops``.
``--measure-winners K`` (with ``--cost latency``) then measures the K best candidates on the
predictor's backend and thread count (threads / affinity pinned, interleaved rounds) and
reports predicted vs measured ms and whether each really meets the budget.
``--attn-types softmax linear_angular`` searches the attention type too: candidates are costed
with their own attention (linear-angular with a ``--linear-kernel-size`` depthwise conv, the
backbone default 9; grids too small for it are skipped) and the rule file carries ``attn_type``
(build the backbone with the same ``linear_kernel_size``). Flops cost only.

Outputs in ``--work-dir``: ``candidates.json`` and ``candidates.md`` (every feasible candidate,
ranked), ``pareto.png`` (score vs cost, the Pareto front highlighted); the winner goes to
``--out-rule`` as ``scaling = dict(...)`` with a comment header.
"""
import argparse
import os.path as osp
import time
from typing import Any, Dict

import mmvitscale  # noqa: F401  (shims before mmengine / host packages)
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmvitscale.errors import flag_errors
from mmvitscale.experiments.report import write_json
from mmvitscale.search.rule_search import (ATTN_TYPES, COSTS, SCORERS, SEARCH_FAMILIES, UNITS,
                                           BudgetError, SearchResult, arch_text, cost_text,
                                           run_search)
from mmvitscale.search.search_inputs import (check_search_args, search_summary,
                                             write_search_outputs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--family', default='vit', choices=SEARCH_FAMILIES)
    p.add_argument('--arch', default=None,
                   help='base preset or JSON dict (default: the fmnist ViT / PiT)')
    p.add_argument('--img-size', type=int, default=32, help='base resolution')
    p.add_argument('--patch-size', type=int, default=4, help='ViT base patch size')
    p.add_argument('--in-channels', type=int, default=1, help='input channels')
    p.add_argument('--backbone-kwargs', default='{}',
                   help="the task config's other backbone arguments as a JSON dict, e.g. "
                   '\'{"with_cls_token": false, "out_type": "avg_featmap"}\' (candidates are '
                   'built and costed with them)')
    p.add_argument('--cost', default='flops', choices=COSTS)
    p.add_argument('--budget', type=float, required=True, help='GFLOPs, or ms for latency')
    p.add_argument('--predictor', default=None, help='LatencyPredictor JSON (--cost latency)')
    p.add_argument('--scorer', default='proxies', choices=SCORERS)
    p.add_argument('--grid', action='append', default=[], metavar='KEY=V1,V2',
                   help='multiplier grid of one knob (repeatable)')
    p.add_argument('--only-grid', action='store_true', help='use only the --grid knobs')
    p.add_argument('--attn-types', nargs='+', choices=ATTN_TYPES, default=None,
                   help='search the attention type over these (default: not searched, softmax)')
    p.add_argument('--linear-kernel-size', type=int, default=9,
                   help='depthwise conv kernel of linear-angular candidates (odd)')
    p.add_argument('--max-candidates', type=int, default=None,
                   help='score at most this many feasible candidates (the costliest)')
    p.add_argument('--proxy-batch', type=int, default=8)
    p.add_argument('--proxy-inits', type=int, default=1)
    p.add_argument('--proxy-points', type=int, default=6)
    p.add_argument('--measure-winners', type=int, default=0, metavar='K',
                   help='--cost latency: measure the K best candidates on the predictor\'s '
                   'backend / threads and report predicted vs measured ms')
    p.add_argument('--measure-rounds', type=int, default=3,
                   help='round-robin passes of the --measure-winners check')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--work-dir', default='work_dirs/scale_search')
    p.add_argument('--out-rule', required=True, help='where to write the winning rule file')
    return p


def parse_args(argv=None, parser=None) -> argparse.Namespace:
    """The flags, checked (and completed) by ``check_search_args`` before any work."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    with flag_errors(parser):
        check_search_args(args)
    return args


def main(argv=None) -> SearchResult:
    parser = build_parser()
    args = parse_args(argv, parser)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    budget = args.budget * 1e9 if args.cost == 'flops' else args.budget
    t0 = time.perf_counter()
    columns = (TextColumn('{task.description}'), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    tasks: Dict[str, Any] = {}
    with flag_errors(parser, BudgetError), Progress(*columns, console=console) as progress:
        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done)

        result = run_search(args.base, budget, args.cost, args.scorer, args.grids,
                            args.predictor_obj, args.max_candidates, report,
                            attn_types=args.attn_types, batch_size=args.proxy_batch,
                            num_inits=args.proxy_inits, num_points=args.proxy_points,
                            seed=args.seed)
    elapsed = time.perf_counter() - t0
    w = result.winner
    measured = []
    if args.measure_winners:
        from mmvitscale.search.rule_search import measure_candidates, predictor_setting
        setting = predictor_setting(args.predictor_obj)
        top = result.ranked[:args.measure_winners]
        console.print(f"measuring the {len(top)} best candidates on {setting['backend']}, "
                      f"{setting['threads']} thread(s), {setting['clock']} clock ...")
        with Progress(*columns, console=console) as progress:
            task = progress.add_task('measure', total=len(top) * args.measure_rounds)
            measured = measure_candidates(
                top, args.base, args.budget, setting['backend'], setting['threads'],
                rounds=args.measure_rounds, clock=setting['clock'],
                progress=lambda d, t: progress.update(task, completed=d))
        for i, m in enumerate(measured, 1):
            console.print(f"#{i} {arch_text(m['arch'])}: predicted {m['predicted_ms']:.2f} ms, "
                          f"measured {m['measured_ms']:.2f} ms (p10-p90 {m['p10_ms']:.2f}-"
                          f"{m['p90_ms']:.2f}, error {m['error_pct']:+.1f}%), meets "
                          f"{args.budget:g} ms: {'yes' if m['meets_budget'] else 'NO'}")
    write_search_outputs(args, result, measured)
    write_json(osp.join(args.work_dir, 'candidates.json'),
               search_summary(args, result, measured, elapsed))
    console.print(f'{len(result.ranked)} feasible of {result.num_enumerated} candidates scored '
                  f'in {elapsed:.1f} s; winner {w.rule} ({arch_text(w.arch)}, '
                  f'{cost_text(w, args.cost)} {UNITS[args.cost]}) -> {args.out_rule}; '
                  f'tables and Pareto plot in {args.work_dir}')
    return result


if __name__ == '__main__':
    main()
