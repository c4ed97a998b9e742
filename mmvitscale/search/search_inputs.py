"""The inputs and outputs of the search tools.

``tools/scale_search.py``: the flags checked before any work (:func:`check_search_args`,
:func:`parse_grids`), each family's default base (:data:`FMNIST_ARCHS`, the backbone of its
offline Fashion-MNIST config) and the files a run writes (:func:`write_search_outputs`: the
rule file with its header, ``candidates.md`` and ``pareto.png``; :func:`search_summary`, the
content of ``candidates.json``).

``tools/search_topology.py``: the proxy settings (:func:`proxy_settings`), the growth settings
(:func:`growth_settings`) and the seed topology (:func:`load_topology`) from its flags.
"""
import ast
import datetime
import json
import os
import os.path as osp
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from ..errors import folder_error, positive_number_error
from ..families import get_family
from ..fileio import atomic_write
from .rule_search import (DEFAULT_GRIDS, UNITS, BaseSpec, SearchResult, arch_text,
                          candidates_markdown, check_grids, check_rule_path,
                          measured_markdown, plot_pareto, write_rule_file)
from .topology import GROWTH_REFERENCE, REFERENCE_PROXY_SETTINGS

__all__ = ['FMNIST_ARCHS', 'check_search_args', 'growth_settings', 'load_topology',
           'parse_grids', 'proxy_settings', 'search_header', 'search_summary',
           'write_search_outputs']

# each family's base arch in its offline Fashion-MNIST config (configs/cls/scaled_*_fmnist.py;
# a test checks that they agree)
FMNIST_ARCHS: Dict[str, Dict[str, Any]] = dict(
    vit=dict(embed_dims=64, num_layers=6, num_heads=2, mlp_ratio=4.0),
    pit=dict(base_dims=[16, 16, 16], depths=[1, 3, 2], heads=[2, 4, 8], patch_size=4,
             patch_stride=2))


def parse_grids(items: Sequence[str], family: str, only: bool = False
                ) -> Dict[str, Tuple[float, ...]]:
    """The multiplier grids: the family's defaults (none with ``only``) with each
    ``KEY=V1,V2,...`` of ``--grid`` replacing one knob's; ``ValueError`` names the flag."""
    grids = {} if only else dict(DEFAULT_GRIDS[family])
    for item in items:
        key, sep, values = item.partition('=')
        try:
            if not sep:
                raise ValueError
            grids[key.strip()] = tuple(float(v) for v in values.split(',') if v.strip())
        except ValueError:
            raise ValueError(f'--grid: expected KEY=V1,V2,..., got {item!r}') from None
    if not grids:
        raise ValueError('--only-grid: give at least one --grid KEY=V1,V2')
    return grids


def check_search_args(args: Any) -> None:
    """Check the flags of ``tools/scale_search.py`` (an ``argparse.Namespace``) before any
    work, and fill in ``arch`` (the family's Fashion-MNIST base by default), ``predictor_obj``,
    ``grids`` and ``base``; ``ValueError`` names the first bad flag."""
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
        from ..cost.predictor import load_predictor
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
    grids = parse_grids(args.grid, args.family, args.only_grid)
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


def budget_text(args: Any) -> str:
    """``--budget`` with its unit."""
    return f'{args.budget:g} GFLOPs' if args.cost == 'flops' else f'{args.budget:g} ms'


def search_header(args: Any, result: SearchResult) -> List[str]:
    """The comment lines on top of the written rule file: what was searched, how, the winner."""
    w = result.winner
    header = [f'Searched by tools/scale_search.py on '
              f'{datetime.datetime.now().isoformat(timespec="seconds")}',
              f'family={args.family} base arch={json.dumps(args.arch)} img_size={args.img_size}'
              + (f' patch_size={args.patch_size}' if get_family(args.family).patch_size_arg
                 else '')
              + f' in_channels={args.in_channels}'
              + (f' backbone_kwargs={args.backbone_kwargs}' if args.base.backbone_kwargs
                 else ''),
              f'{args.cost} budget {budget_text(args)}, scorer {args.scorer}; '
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
    return header


def search_summary(args: Any, result: SearchResult, measured: Sequence[Mapping[str, Any]],
                   elapsed: float) -> Dict[str, Any]:
    """What ``candidates.json`` holds: the search's settings, the winner, the Pareto front, every
    feasible candidate and the measured winners."""
    return dict(family=args.family, arch=args.arch, img_size=args.img_size,
                patch_size=args.patch_size, in_channels=args.in_channels, cost=args.cost,
                budget=args.budget, budget_unit=UNITS[args.cost], scorer=args.scorer,
                attn_types=args.attn_types, linear_kernel_size=args.linear_kernel_size,
                num_enumerated=result.num_enumerated,
                num_infeasible_rules=result.num_infeasible_rules,
                num_feasible=len(result.ranked), elapsed_s=elapsed, out_rule=args.out_rule,
                winner=result.winner.as_dict(), measured=list(measured),
                pareto=[c.as_dict() for c in result.front],
                candidates=[c.as_dict() for c in result.ranked])


def write_search_outputs(args: Any, result: SearchResult,
                         measured: Sequence[Mapping[str, Any]]) -> None:
    """Write the winner to ``args.out_rule`` (with :func:`search_header`), and
    ``candidates.md`` and ``pareto.png`` to ``args.work_dir``."""
    os.makedirs(args.work_dir, exist_ok=True)
    write_rule_file(args.out_rule, result.winner.rule, search_header(args, result))
    atomic_write(osp.join(args.work_dir, 'candidates.md'),
                 candidates_markdown(result, f'Scaling search: {args.cost} <= '
                                     f'{budget_text(args)}, scorer {args.scorer}')
                 + measured_markdown(measured, args.budget))
    plot_pareto(osp.join(args.work_dir, 'pareto.png'), result)


# ---------------------------------------------------------------------------- topology search
GROWTH_OPTIONS = ('budget_params', 'budget_flops', 'init_width', 'width_scale', 'head_classes',
                  'stop_at')


def proxy_settings(args: Any) -> Dict[str, Any]:
    """The proxies' settings: As-ViT's with ``--reference-proxies``, else the ``--proxy-*``
    flags."""
    if args.reference_proxies:
        return dict(REFERENCE_PROXY_SETTINGS)
    return dict(img_size=args.proxy_size, batch_size=args.proxy_batch,
                num_inits=args.proxy_inits, num_points=args.proxy_points,
                radius=args.proxy_radius, endpoint=args.proxy_endpoint)


def growth_settings(args: Any) -> Dict[str, Any]:
    """``grow``'s settings: As-ViT's with ``--reference-growth`` (which no budget or width flag
    may accompany), else the budget (one needed) and width flags; ``ValueError`` names them."""
    given = [f'--{k.replace("_", "-")}' for k in GROWTH_OPTIONS if getattr(args, k) is not None]
    if args.reference_growth:
        if given:
            raise ValueError(f'--reference-growth sets {", ".join(given)} itself; drop them or '
                             'drop --reference-growth')
        return dict(GROWTH_REFERENCE, budget_flops=None)
    if args.budget_params is None and args.budget_flops is None:
        raise ValueError('grow needs --budget-params, --budget-flops or --reference-growth')
    init = 16 if args.init_width is None else args.init_width
    return dict(budget_params=args.budget_params, budget_flops=args.budget_flops,
                init_width=init or None,
                width_scale=1 if args.width_scale is None else args.width_scale,
                head_classes=args.head_classes or 0, stop_at=args.stop_at)


def load_topology(text: str) -> Dict[str, Any]:
    """A topology from an arch file (``arch = dict(...)``, e.g. ``search``'s
    ``seed_topology.py``) or a JSON / Python dict literal; ``ValueError`` when neither."""
    if osp.isfile(text):
        from mmengine.config import Config
        cfg = Config.fromfile(text)
        if 'arch' not in cfg:
            raise ValueError(f'{text} has no `arch = dict(...)`')
        return cfg.arch.to_dict() if hasattr(cfg.arch, 'to_dict') else dict(cfg.arch)
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(f'--seed-topology: {text!r} is neither an arch file nor a dict') from None
