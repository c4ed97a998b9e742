"""Ranking agreement of this project's As-ViT proxies with the reference pipeline.

    python benchmarks/asvit_ranking.py --asvit-repo /path/to/AsViT [--topologies 12]

Samples ``--topologies`` topologies of the search space (seeded) at the search proxy (width
32, one block per stage) and scores each

* with the reference pipeline, twice (init seeds ``--ref-seeds``): As-ViT's own ``Transformer``
  (``lib/models/cell_infers/transformer.py`` of a local checkout, not a dependency of this
  project), built and re-initialised per repeat as ``TEG.set_network`` does
  (``deepcopy`` + ``apply(_init_weights)``: the tokenizer conv keeps one default draw for all
  repeats); NTK condition of ``forward_features(x)[1]`` over the ``*weight*`` tensors on a
  standard-normal batch, length distortion on a radius-1 circle
  ``torch.svd(randn(numel, 2))[0] [cos t, sin t]``, ``t = linspace(0, 2 pi, K)``, with the
  LayerNorms switched off; averaged over ``--repeats``. The per-sample gradients and the
  circle derivatives use ``torch.func`` (``vmap(grad)`` / ``jvp``) instead of the reference's
  loops of backward passes: the same numbers (``tests/test_asvit_reference.py`` checks the
  loops against them), minutes instead of hours;
* with :func:`mmvitscale.search.topology.proxy_score_fn` at the reference's settings
  (``REFERENCE_PROXY_SETTINGS``), and with its length distortion at this project's circle
  (radius ``sqrt(numel)``, distinct angles) and at its CPU defaults (32 px, batch 8, one init).

Prints and writes (``--out-dir``) Kendall tau of every pair of score lists. Resumable: scores
are cached in ``scores.json`` per topology and pipeline.
"""
import argparse
import copy
import json
import math
import os
import os.path as osp
import time
from typing import Dict, List, Tuple

import mmvitscale  # noqa: F401  (shims first)
import torch
from scipy.stats import kendalltau
from torch import nn
from torch.func import jvp

from mmvitscale.fileio import atomic_write
from mmvitscale.models.asvit_reference import load_reference
from mmvitscale.search import proxies as P
from mmvitscale.search.topology import (REFERENCE_PROXY_SETTINGS, SPACE, arch_to_genotype,
                                        choices_to_arch, genotype_to_arch, proxy_score_fn)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--asvit-repo', required=True, help='a checkout of VITA-Group/AsViT')
    p.add_argument('--topologies', type=int, default=12)
    p.add_argument('--topology-seed', type=int, default=0)
    p.add_argument('--ref-seeds', type=int, nargs=2, default=(0, 1000),
                   help='init seeds of the two reference runs')
    p.add_argument('--seed', type=int, default=0, help='seed of proxy_score_fn')
    p.add_argument('--img-size', type=int, default=REFERENCE_PROXY_SETTINGS['img_size'])
    p.add_argument('--batch', type=int, default=REFERENCE_PROXY_SETTINGS['batch_size'])
    p.add_argument('--repeats', type=int, default=REFERENCE_PROXY_SETTINGS['num_inits'])
    p.add_argument('--num-points', type=int, default=REFERENCE_PROXY_SETTINGS['num_points'])
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--out-dir', default='work_dirs/benchmarks/asvit_ranking')
    return p.parse_args(argv)


def sample_genotypes(n: int, seed: int) -> List[str]:
    gen = torch.Generator().manual_seed(seed)
    out: List[str] = []
    while len(out) < n:
        choices = {name: opts[int(torch.randint(len(opts), (1, ), generator=gen))]
                   for name, opts in SPACE}
        g = arch_to_genotype(choices_to_arch(choices))
        if g not in out:
            out.append(g)
    return out


# ---------------------------------------------------------------------------- reference
class _Features(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_features(x)[1]


def reference_pipeline(repo: str, genotype: str, seed: int, args) -> Tuple[float, float]:
    """As-ViT's TEG scores (NTK condition, length distortion) of ``genotype``."""
    Transformer, CellStructure = load_reference(repo)
    g = CellStructure(genotype)
    S, shape = args.img_size, (3, args.img_size, args.img_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Transformer(img_size=S, patch_sizes=g.patch_sizes, stride=4, in_chans=3,
                          num_classes=1000, embed_dim=32, depths=[1, 1, 1, 1],
                          num_heads=g.heads, window_sizes=g.window_sizes,
                          mlp_ratios=g.mlp_ratios, drop_rate=0., attn_drop_rate=0.,
                          drop_path_rate=0.)
        inputs = torch.randn(args.batch, *shape)
        ntks, lds = [], []
        for _ in range(args.repeats):
            basis = torch.svd(torch.randn(math.prod(shape), 2))[0]
            net_r = copy.deepcopy(net)
            net_r.apply(net_r._init_weights)
            net_r.train()
            with torch.enable_grad():
                ntks.append(P._condition_number(
                    P._ntk_gram(_Features(net_r), inputs, 'weight', 2**26)[0]))
            net_r.switch_norm('id')
            t = torch.linspace(0, 2 * math.pi, args.num_points)
            points = (basis @ torch.stack([t.cos(), t.sin()])).T.reshape(-1, *shape)
            tangents = (basis @ torch.stack([-t.sin(), t.cos()])).T.reshape(-1, *shape)
            with torch.enable_grad():
                _, deriv = jvp(lambda z: net_r.forward_features(z)[1], (points, ),
                               (tangents, ))
            lds.append(deriv.double().norm(dim=1).sum().item())
    return sum(ntks) / len(ntks), sum(lds) / len(lds)


# ---------------------------------------------------------------------------- this project
def ours(genotype: str, args, **settings) -> Tuple[float, float]:
    kw = dict(REFERENCE_PROXY_SETTINGS, img_size=args.img_size, batch_size=args.batch,
              num_inits=args.repeats, num_points=args.num_points)
    kw.update(settings)
    out = proxy_score_fn(seed=args.seed, **kw)(genotype_to_arch(genotype))
    return out['ntk_condition'], out['length_distortion']


def ours_length(genotype: str, args) -> float:
    """Length distortion on this project's default circle (radius sqrt(numel), distinct
    angles), same model builder and seeds as :func:`proxy_score_fn`."""
    from mmvitscale.models import AsViT

    def build() -> nn.Module:
        model = AsViT(genotype_to_arch(genotype), img_size=args.img_size,
                      out_type='avg_featmap', final_norm=False)
        model.init_weights()
        return model

    return P.length_distortion(build, (3, args.img_size, args.img_size), args.num_points,
                               args.repeats, args.seed)


def tau(a: List[float], b: List[float]) -> float:
    return float(kendalltau(a, b).statistic)


def main(argv=None) -> Dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    cache_path = osp.join(args.out_dir, 'scores.json')
    settings = dict(img_size=args.img_size, batch=args.batch, repeats=args.repeats,
                    num_points=args.num_points, seed=args.seed, ref_seeds=list(args.ref_seeds))
    cache = {}
    if osp.exists(cache_path):
        with open(cache_path, encoding='utf-8') as f:
            old = json.load(f)
        if old.get('settings') == settings:
            cache = old['scores']
    genotypes = sample_genotypes(args.topologies, args.topology_seed)
    ref_a, ref_b = (f'reference_seed{s}' for s in args.ref_seeds)
    pipelines = {
        ref_a: lambda g: reference_pipeline(args.asvit_repo, g, args.ref_seeds[0], args),
        'ours_reference_settings': lambda g: ours(g, args),
        ref_b: lambda g: reference_pipeline(args.asvit_repo, g, args.ref_seeds[1], args),
        'ours_default_circle': lambda g: (math.nan, ours_length(g, args)),
        'ours_cpu_defaults': lambda g: ours(g, args, img_size=32, batch_size=8, num_inits=1,
                                            radius=None, endpoint=False),
    }
    for name, fn in pipelines.items():  # pipeline by pipeline: a partial run has the main pairs
        for i, g in enumerate(genotypes):
            key = f'{g} {name}'
            if key in cache:
                continue
            t0 = time.perf_counter()
            cache[key] = list(fn(g))
            print(f'[{i + 1}/{len(genotypes)}] {g} {name}: ntk {cache[key][0]:.4g} ld '
                  f'{cache[key][1]:.4g} ({time.perf_counter() - t0:.1f} s)', flush=True)
            atomic_write(cache_path, json.dumps(dict(settings=settings, scores=cache),
                                                indent=1))
    scores = {name: [cache[f'{g} {name}'] for g in genotypes] for name in pipelines}
    pairs = [(ref_a, ref_b), ('ours_reference_settings', ref_a),
             ('ours_reference_settings', ref_b), ('ours_default_circle', ref_a),
             ('ours_default_circle', 'ours_reference_settings'), ('ours_cpu_defaults', ref_a),
             ('ours_cpu_defaults', ref_b)]
    rows = []
    for a, b in pairs:
        row = dict(a=a, b=b)
        for j, proxy in enumerate(('ntk', 'ld')):
            x, y = [s[j] for s in scores[a]], [s[j] for s in scores[b]]
            row[proxy] = tau(x, y) if not any(map(math.isnan, x + y)) else None
        rows.append(row)
    lines = [f'{len(genotypes)} topologies (seed {args.topology_seed}), {args.img_size} px, '
             f'batch {args.batch}, {args.repeats} inits, {args.num_points} points, '
             f'{torch.get_num_threads()} threads, torch {torch.__version__}', '',
             '| scores A | scores B | Kendall tau NTK | Kendall tau length distortion |',
             '|---|---|---|---|']
    for r in rows:
        fmt = [('-' if r[p] is None else f'{r[p]:+.2f}') for p in ('ntk', 'ld')]
        lines.append(f"| {r['a']} | {r['b']} | {fmt[0]} | {fmt[1]} |")
    md = '\n'.join(lines) + '\n'
    atomic_write(osp.join(args.out_dir, 'ranking.md'), md)
    atomic_write(osp.join(args.out_dir, 'ranking.json'),
                 json.dumps(dict(settings=settings, genotypes=genotypes, scores=scores,
                                 tau=rows), indent=1))
    print(md)
    return dict(rows=rows, scores=scores)


if __name__ == '__main__':
    main()
