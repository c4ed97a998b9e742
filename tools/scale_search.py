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
import datetime
import json
import os
import os.path as osp
import sys
import time
from typing import Any, Dict

import mmvitscale  # noqa: F401  (shims before mmengine / host packages)
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmvitscale.errors import folder_error, positive_number_error
from mmvitscale.fileio import atomic_write
from mmvitscale.families import get_family
from mmvitscale.experiments.report import write_json
from mmvitscale.search.scale_search import (ATTN_TYPES, COSTS, DEFAULT_GRIDS, FAMILIES, SCORERS,
                                            UNITS, BaseSpec, BudgetError, SearchResult, arch_text,
                                            candidates_markdown, check_grids, check_rule_path,
                                            cost_text, measured_markdown, plot_pareto, run_search,
                                            write_rule_file)

# each family's base arch in its offline Fashion-MNIST config (configs/cls/scaled_*_fmnist.py)
FMNIST_ARCHS = dict(
    vit=dict(embed_dims=64, num_layers=6, num_heads=2, mlp_ratio=4.0),
    pit=dict(base_dims=[16, 16, 16], depths=[1, 3, 2], heads=[2, 4, 8], patch_size=4,
             patch_stride=2))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--family', default='vit', choices=FAMILIES)
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
    args = p.parse_args(argv)
    try:
        validate(args)
    except ValueError as err:
        p.error(str(err))
    return args


def validate(args: argparse.Namespace) -> None:
    """Fill family defaults and raise ValueError naming the first bad flag."""
    check_rule_path(args.out_rule, '--out-rule')  # refused before the search, not after it
    problem = folder_error(args.work_dir)
    if problem:
        raise ValueError(f'--work-dir: {problem}')
    if args.arch is None:
        if args.family not in FMNIST_ARCHS:
            raise ValueError(f'--arch: --family {args.family} has no Fashion-MNIST default '
                             'base; give --arch (a preset name or a JSON dict)')
        args.arch = FMNIST_ARCHS[args.family]
    elif args.arch.lstrip().startswith('{'):
        try:
            args.arch = json.loads(args.arch)
        except ValueError as err:
            raise ValueError(f'--arch: not a JSON dict: {err}') from None
    problem = positive_number_error(args.budget)
    if problem:
        raise ValueError(f'--budget: {problem}')
    if args.cost == 'latency':
        if not args.predictor:
            raise ValueError('--cost latency needs --predictor FILE')
        from mmvitscale.cost.predictor import load_predictor
        try:
            args.predictor_obj = load_predictor(args.predictor)
        except ValueError as err:
            raise ValueError(f'--predictor: {err}') from None
    else:
        args.predictor_obj = None
    for flag in ('img_size', 'patch_size', 'in_channels'):
        if getattr(args, flag) < 1:
            raise ValueError(f'--{flag.replace("_", "-")}: must be >= 1, got '
                             f'{getattr(args, flag)}')
    if args.measure_winners < 0:
        raise ValueError(f'--measure-winners: must be >= 0, got {args.measure_winners}')
    if args.measure_winners and args.cost != 'latency':
        raise ValueError('--measure-winners: needs --cost latency (a predicted latency to '
                         'check)')
    if args.measure_rounds < 1:
        raise ValueError(f'--measure-rounds: must be >= 1, got {args.measure_rounds}')
    for flag in ('max_candidates', 'threads'):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f'--{flag.replace("_", "-")}: must be >= 1, got {value}')
    for flag in ('proxy_batch', 'proxy_inits', 'proxy_points'):
        if getattr(args, flag) < 1:
            raise ValueError(f'--{flag.replace("_", "-")}: must be >= 1, got '
                             f'{getattr(args, flag)}')
    if args.proxy_batch < 2:
        raise ValueError('--proxy-batch: the NTK needs at least 2 samples')
    if args.attn_types:
        args.attn_types = list(dict.fromkeys(args.attn_types))
        if args.cost == 'latency' and set(args.attn_types) - {'softmax'}:
            raise ValueError('--attn-types: the latency predictor models softmax attention '
                             'only; search linear_angular with --cost flops')
    k = args.linear_kernel_size
    if k < 1 or k % 2 == 0:
        raise ValueError(f'--linear-kernel-size: must be an odd positive int, got {k}')
    grids = {} if args.only_grid else dict(DEFAULT_GRIDS[args.family])
    for item in args.grid:
        key, sep, values = item.partition('=')
        try:
            if not sep:
                raise ValueError
            grids[key.strip()] = tuple(float(v) for v in values.split(',') if v.strip())
        except ValueError:
            raise ValueError(f'--grid: expected KEY=V1,V2,..., got {item!r}') from None
    if not grids:
        raise ValueError('--only-grid: give at least one --grid KEY=V1,V2')
    try:
        kwargs = json.loads(args.backbone_kwargs)
    except ValueError as err:
        raise ValueError(f'--backbone-kwargs: not a JSON dict: {err}') from None
    try:
        args.base = BaseSpec(args.family, args.arch, args.img_size, args.patch_size,
                             args.in_channels, args.linear_kernel_size, kwargs)
    except ValueError as err:
        if 'backbone_kwargs' in str(err):
            raise ValueError(f'--backbone-kwargs {args.backbone_kwargs}: '
                             f'{str(err).replace("backbone_kwargs ", "")}') from None
        raise ValueError(f'--arch: {err}') from None
    try:
        args.grids = check_grids(grids, args.family)
        args.base.resolve({})
    except ValueError as err:
        raise ValueError(f'--grid / --arch: {err}') from None


def main(argv=None) -> SearchResult:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    budget = args.budget * 1e9 if args.cost == 'flops' else args.budget
    t0 = time.perf_counter()
    columns = (TextColumn('{task.description}'), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    tasks: Dict[str, Any] = {}
    try:
        with Progress(*columns, console=console) as progress:
            def report(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done)

            result = run_search(args.base, budget, args.cost, args.scorer, args.grids,
                                args.predictor_obj, args.max_candidates, report,
                                attn_types=args.attn_types, batch_size=args.proxy_batch,
                                num_inits=args.proxy_inits, num_points=args.proxy_points,
                                seed=args.seed)
    except BudgetError as err:
        console.print(f'[red]error:[/red] {err}')
        sys.exit(2)
    elapsed = time.perf_counter() - t0
    w = result.winner
    measured = []
    if args.measure_winners:
        from mmvitscale.search.scale_search import measure_candidates, predictor_setting
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
    budget_text = (f'{args.budget:g} GFLOPs' if args.cost == 'flops' else f'{args.budget:g} ms')
    header = [f'Searched by tools/scale_search.py on '
              f'{datetime.datetime.now().isoformat(timespec="seconds")}',
              f'family={args.family} base arch={json.dumps(args.arch)} img_size={args.img_size}'
              + (f' patch_size={args.patch_size}' if get_family(args.family).patch_size_arg
                 else '')
              + f' in_channels={args.in_channels}'
              + (f' backbone_kwargs={args.backbone_kwargs}' if args.base.backbone_kwargs
                 else ''),
              f'{args.cost} budget {budget_text}, scorer {args.scorer}; '
              f'{len(result.ranked)} feasible of {result.num_enumerated} candidates'
              + (f'; attention types searched: {", ".join(args.attn_types)} (linear_angular '
                 f'costed with linear_kernel_size={args.linear_kernel_size})'
                 if args.attn_types else ''),
              f'winner: {arch_text(w.arch)}'
              + (f', {w.attn_type} attention' if args.attn_types else '')
              + f', {w.flops / 1e9:.4f} GFLOPs'
              + (f', {w.latency_ms:.3f} ms predicted' if w.latency_ms is not None else '')
              + f', score {w.score:.4g}']
    if w.rule.get('attn_type', 'softmax') != 'softmax':
        header.append(f'build the backbone with linear_kernel_size={args.linear_kernel_size} '
                      '(the kernel this rule was costed with)')
    os.makedirs(args.work_dir, exist_ok=True)
    write_rule_file(args.out_rule, w.rule, header)
    summary = dict(family=args.family, arch=args.arch, img_size=args.img_size,
                   patch_size=args.patch_size, in_channels=args.in_channels, cost=args.cost,
                   budget=args.budget, budget_unit=UNITS[args.cost], scorer=args.scorer,
                   attn_types=args.attn_types, linear_kernel_size=args.linear_kernel_size,
                   num_enumerated=result.num_enumerated,
                   num_infeasible_rules=result.num_infeasible_rules,
                   num_feasible=len(result.ranked), elapsed_s=elapsed, out_rule=args.out_rule,
                   winner=w.as_dict(), measured=measured,
                   pareto=[c.as_dict() for c in result.front],
                   candidates=[c.as_dict() for c in result.ranked])
    write_json(osp.join(args.work_dir, 'candidates.json'), summary)
    atomic_write(osp.join(args.work_dir, 'candidates.md'),
                 candidates_markdown(result, f'Scaling search: {args.cost} <= {budget_text}, '
                                     f'scorer {args.scorer}')
                 + measured_markdown(measured, args.budget))
    plot_pareto(osp.join(args.work_dir, 'pareto.png'), result)
    console.print(f'{len(result.ranked)} feasible of {result.num_enumerated} candidates scored '
                  f'in {elapsed:.1f} s; winner {w.rule} ({arch_text(w.arch)}, '
                  f'{cost_text(w, args.cost)} {UNITS[args.cost]}) -> {args.out_rule}; '
                  f'tables and Pareto plot in {args.work_dir}')
    return result


if __name__ == '__main__':
    main()
