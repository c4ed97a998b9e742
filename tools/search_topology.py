"""As-ViT topology search and family growth on training-free proxies.

    python tools/search_topology.py search --steps 20 --work-dir work_dirs/asvit
    python tools/search_topology.py grow --seed-topology work_dirs/asvit/seed_topology.py \
        --budget-params 2e6 --work-dir work_dirs/asvit

``search`` runs REINFORCE over the As-ViT space (narrow proxy: width 32, one block per stage)
and writes ``seed_topology.py`` (``arch = dict(...)``); ``grow`` grows it into a family under a
parameter (``--budget-params``) or FLOPs (``--budget-flops``, MACs at ``--img-size``) budget and
writes ``asvit_<size>.py`` per member. Both log every candidate to a JSON Lines file in
``--work-dir`` and resume from it when re-run with the same settings (``--no-resume`` starts
over). Defaults are CPU-sized (proxies on 32 px, batch 8, one init, circle radius
sqrt(numel) with distinct angles); ``--reference-proxies`` sets As-ViT's search settings
(224 px, batch 16, 5 inits, 10 points on a radius-1 circle, ``linspace(0, 2 pi, 10)``), as
``--steps 500 --reference-proxies`` is its search, and ``grow --reference-proxies
--reference-growth`` its growth (scored at width 8 and up, members 4x wider, stop at 80M
parameters with a 1000-class head, none above 110M).
"""
import argparse
import os.path as osp
import sys
import time

import mmvitscale  # noqa: F401  (shims before mmengine / host packages)
from mmengine.logging import MMLogger

from mmvitscale.errors import flag_errors
from mmvitscale.search.search_inputs import growth_settings, load_topology, proxy_settings
from mmvitscale.search.topology import (PUBLISHED_SEED, arch_to_choices, arch_to_genotype,
                                        genotype_to_arch, grow_family, plot_growth, plot_search,
                                        proxy_score_fn, reinforce_search)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest='command', required=True)
    for name in ('search', 'grow'):
        s = sub.add_parser(name)
        s.add_argument('--work-dir', default='work_dirs/asvit_topology')
        s.add_argument('--seed', type=int, default=0)
        s.add_argument('--proxy-size', type=int, default=32, help='proxy input side (px)')
        s.add_argument('--proxy-batch', type=int, default=8, help='NTK batch size')
        s.add_argument('--proxy-inits', type=int, default=1, help='inits averaged per score')
        s.add_argument('--proxy-points', type=int, default=10,
                       help='circle points for the length distortion')
        s.add_argument('--proxy-radius', type=float, default=None,
                       help='circle radius (default sqrt(numel); As-ViT: 1)')
        s.add_argument('--proxy-endpoint', action='store_true',
                       help='circle angles linspace(0, 2 pi, K) as As-ViT (first = last)')
        s.add_argument('--reference-proxies', action='store_true',
                       help='As-ViT\'s proxy settings (overrides the --proxy-* options)')
        s.add_argument('--in-channels', type=int, default=3)
        s.add_argument('--no-resume', action='store_true', help='overwrite an existing log')
        s.add_argument('--no-progress', action='store_true')
    s = sub.choices['search']
    s.add_argument('--steps', type=int, default=20, help='candidates sampled (paper: ~500)')
    s.add_argument('--lr', type=float, default=0.08)
    s.add_argument('--momentum', type=float, default=0.9, help='reward baseline momentum')
    s.add_argument('--out', default=None, help='seed topology file (default WORK_DIR/...)')
    g = sub.choices['grow']
    g.add_argument('--seed-topology', required=True,
                   help='arch file (arch = dict(...)) from `search`, or a JSON dict')
    budget = g.add_mutually_exclusive_group()
    budget.add_argument('--budget-params', type=float, help='parameters, e.g. 2e6')
    budget.add_argument('--budget-flops', type=float, help='MACs at --img-size, e.g. 1e9')
    g.add_argument('--img-size', type=int, default=224, help='resolution for FLOPs / files')
    g.add_argument('--init-width', type=int, default=None,
                   help='starting stage-1 width of the scored networks (default 16; 0: the '
                        'seed topology\'s)')
    g.add_argument('--width-scale', type=int, default=None,
                   help='members are this many times wider than the networks scored (1)')
    g.add_argument('--head-classes', type=int, default=None,
                   help='count a classification head of this many classes in --budget-params')
    g.add_argument('--stop-at', type=float, default=None,
                   help='stop once a member costs at least this much')
    g.add_argument('--reference-growth', action='store_true',
                   help='As-ViT\'s growth settings: width 8, members 4x wider with a '
                        '1000-class head, stop at 80M parameters, budget 110M (not combined '
                        'with the budget and width options above); on tied rank sums decided '
                        'by the distortion the higher one wins, where As-ViT\'s code keeps the '
                        'lower')
    g.add_argument('--sizes', default='small,base,large')
    g.add_argument('--max-steps', type=int, default=1000)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logger = MMLogger.get_instance('mmvitscale_topology', log_level='INFO')
    settings = proxy_settings(args)
    logger.info(f'proxy settings: {settings}')
    with flag_errors(parser):
        score_fn = proxy_score_fn(seed=args.seed, in_channels=args.in_channels, **settings)
        growth = growth_settings(args) if args.command == 'grow' else None
        topology = load_topology(args.seed_topology) if args.command == 'grow' else None
    t0 = time.perf_counter()
    if args.command == 'search':
        out = args.out or osp.join(args.work_dir, 'seed_topology.py')
        log_path = osp.join(args.work_dir, 'search.jsonl')
        res = reinforce_search(args.steps, args.seed, score_fn, log_path,
                               resume=not args.no_resume, lr=args.lr, momentum=args.momentum,
                               out_path=out, progress=not args.no_progress,
                               score_settings=settings)
        plot = osp.join(args.work_dir, 'search.png')
        if res.history:
            plot_search(res, plot, arch_to_choices(genotype_to_arch(PUBLISHED_SEED)))
        logger.info(f'seed topology: {res.topology} ({arch_to_genotype(res.topology)}; '
                    f'As-ViT published {PUBLISHED_SEED}); policy plot {plot}')
        logger.info('policy probability of each choice: ' + ', '.join(
            f'{name} {choice} ({p:.2f})' for name, (choice, p) in res.confidence().items()))
        logger.info(f'{res.num_scored} candidates scored now, {len(res.records)} in the log '
                    f'{log_path}; wrote {out} in {time.perf_counter() - t0:.1f} s')
        return 0
    logger.info(f'growth settings: {growth}')
    with flag_errors(parser):
        res = grow_family(topology, seed=args.seed,
                          log_path=osp.join(args.work_dir, 'growth.jsonl'),
                          sizes=[s for s in args.sizes.split(',') if s], score_fn=score_fn,
                          img_size=args.img_size, in_channels=args.in_channels,
                          out_dir=args.work_dir, resume=not args.no_resume,
                          max_steps=args.max_steps, progress=not args.no_progress,
                          score_settings=settings, **growth)
    plot_growth(res, osp.join(args.work_dir, 'growth.png'))
    for size, member in res.family.items():
        arch = member['arch']
        logger.info(f'{size:>6}: step {member["step"]:3d}  {res.cost_kind} '
                    f'{member["cost"]:.4g}  width {arch["width"]}  depths {arch["depths"]}  '
                    f'-> {res.files[size]}')
    logger.info(f'{len(res.trajectory) - 1} growth steps, {res.num_scored} candidates scored '
                f'now, {time.perf_counter() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
