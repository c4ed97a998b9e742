"""As-ViT training-free proxies: vectorised implementation against the per-sample loops.

    python benchmarks/proxies.py [--out-dir DIR] [--rounds N] [--num-inits N] [--quick]
    python benchmarks/proxies.py --models asvit-seed --img-size 224 --rounds 1 --num-inits 1

For a small ScaledViT, a small ScaledPiT and As-ViT's published seed topology
(``8,2,3|4,1,2|4,1,4|4,1,6|32``, the search proxy) at As-ViT's growth-proxy scale (32x32
inputs by default, ``--img-size`` 224 is its search setting; batch 16, 10 circle points, 5
seeded inits) it computes the NTK condition number and the length distortion with
``mmvitscale.search.proxies`` (NTK by module hooks where they apply, else ``vmap(grad)``;
``jvp``) and with the reference loops (one backward pass per sample / one double-backward jvp
per point), checks that the values agree (relative difference, goal <= 1e-4) and times both,
alternating the two round by round so machine drift hits both equally. Times are medians of
wall-clock and of process CPU seconds (the latter is less sensitive to other jobs on a shared
machine).
It also times both fast proxies against the network's own forward + backward of the same batch
(:func:`mmvitscale.search.proxies.proxy_timing`, goal <= 1.6x) and prints that ratio.
Writes ``proxies.json`` and ``proxies.md``; speed goals live here, not in tests.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import time
from typing import Callable, Dict, List, Tuple

import mmvitscale  # noqa: F401  (shims first)
import torch
from torch import nn

from mmvitscale.cost.latency import cpu_name
from mmvitscale.fileio import atomic_write
from mmvitscale.models import AsViT, ScaledPiT, ScaledViT
from mmvitscale.search import proxies as P
from mmvitscale.search.topology import genotype_to_arch

INPUT_SHAPE = (3, 32, 32)  # --img-size replaces the sides
RTOL = 1e-4  # agreement goal between the fast path and the loops


def small_vit(img_size: int = 32) -> nn.Module:
    """Width 64, 4 blocks, patch 4 (65 tokens at 32x32); features pooled before any norm."""
    model = ScaledViT(dict(embed_dims=64, num_layers=4, num_heads=2, mlp_ratio=4.0),
                      img_size=img_size, patch_size=4, out_type='avg_featmap',
                      final_norm=False)
    model.init_weights()
    return model


def small_pit(img_size: int = 32) -> nn.Module:
    """Widths 32/64/128 over 1/2/1 blocks, 15x15 tokens at stage 1 (32x32); pooled map."""
    model = ScaledPiT(dict(base_dims=(16, 16, 16), depths=(1, 2, 1), heads=(2, 4, 8),
                           patch_size=4, patch_stride=2), img_size=img_size,
                      out_type='avg_featmap')
    model.init_weights()
    return model


def asvit_seed(img_size: int = 32) -> nn.Module:
    """As-ViT's published seed topology at the search proxy (width 32, one block per stage),
    ``forward_features(x)[1]`` as the proxies read it."""
    model = AsViT(genotype_to_arch('8,2,3|4,1,2|4,1,4|4,1,6|32'), img_size=img_size,
                  out_type='avg_featmap', final_norm=False)
    model.init_weights()
    return model


MODELS: Dict[str, Callable[[int], nn.Module]] = {
    'vit-w64-d4': small_vit, 'pit-w32-d1.2.1': small_pit, 'asvit-seed': asvit_seed}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='work_dirs/benchmarks')
    parser.add_argument('--rounds', type=int, default=3, help='alternating timed rounds')
    parser.add_argument('--num-inits', type=int, default=5)
    parser.add_argument('--batch', type=int, default=16, help='NTK batch size')
    parser.add_argument('--num-points', type=int, default=10, help='circle points')
    parser.add_argument('--img-size', type=int, default=32, help='input side (px)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads (default: torch\'s choice)')
    parser.add_argument('--models', nargs='+', choices=sorted(MODELS), default=None)
    parser.add_argument('--ratio-only', action='store_true',
                        help='only the proxies against forward + backward (no per-sample loops)')
    parser.add_argument('--quick', action='store_true',
                        help='one round, one init (smoke test of the script)')
    return parser.parse_args(argv)


def _timed(fn: Callable[[], float]) -> Tuple[float, float, float]:
    """(value, wall seconds, process CPU seconds) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - w0, time.process_time() - c0


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def bench_model(name: str, make: Callable[[int], nn.Module], args) -> Dict:
    shape = (INPUT_SHAPE[0], args.img_size, args.img_size)

    def builder() -> nn.Module:
        return make(args.img_size)

    inputs = torch.randn((args.batch, ) + shape,
                         generator=torch.Generator().manual_seed(args.seed))
    kw = dict(num_inits=args.num_inits, seed=args.seed)
    impls = {
        'ntk': {
            'fast': lambda: P.ntk_condition(builder, inputs, **kw),
            'loop': lambda: P._ntk_condition_loop(builder, inputs, **kw),
        },
        'length': {
            'fast': lambda: P.length_distortion(builder, shape, args.num_points, **kw),
            'loop': lambda: P._length_distortion_loop(builder, shape, args.num_points, **kw),
        },
    }
    num_params = sum(p.numel() for p in P._model_for_init(builder, 0).parameters())
    row = dict(model=name, params=num_params)
    # both fast proxies against the network's own forward + backward, timed in turn
    cost = P.proxy_timing(builder, shape, args.batch, args.num_points, args.num_inits,
                          args.seed, rounds=args.rounds)
    row.update({f'floor_{k}': cost[k] for k in ('ntk_s', 'ld_s', 'proxies_s', 'fwd_bwd_s')},
               ratio_to_fwd_bwd=cost['ratio'])
    if args.ratio_only:
        return row
    values: Dict[str, Dict[str, float]] = {p: {} for p in impls}
    wall: Dict[str, Dict[str, List[float]]] = {p: {'fast': [], 'loop': []} for p in impls}
    cpu: Dict[str, Dict[str, List[float]]] = {p: {'fast': [], 'loop': []} for p in impls}
    for proxy, fns in impls.items():  # untimed first calls: values + warm-up
        for impl, fn in fns.items():
            values[proxy][impl] = fn()
    for _ in range(args.rounds):
        for proxy, fns in impls.items():
            for impl, fn in fns.items():
                value, w, c = _timed(fn)
                if value != values[proxy][impl] and not (value != value):  # nan-safe
                    raise RuntimeError(f'{name} {proxy} {impl} is not deterministic: '
                                       f'{value!r} vs {values[proxy][impl]!r}')
                wall[proxy][impl].append(w)
                cpu[proxy][impl].append(c)
    for proxy in impls:
        for impl in ('fast', 'loop'):
            row[f'{proxy}_{impl}'] = values[proxy][impl]
            row[f'{proxy}_{impl}_wall_s'] = statistics.median(wall[proxy][impl])
            row[f'{proxy}_{impl}_cpu_s'] = statistics.median(cpu[proxy][impl])
        row[f'{proxy}_rel_diff'] = _rel(values[proxy]['fast'], values[proxy]['loop'])
        row[f'{proxy}_agree'] = row[f'{proxy}_rel_diff'] <= RTOL
        for clock in ('wall', 'cpu'):
            row[f'{proxy}_speedup_{clock}'] = (row[f'{proxy}_loop_{clock}_s'] /
                                               row[f'{proxy}_fast_{clock}_s'])
    for clock in ('wall', 'cpu'):
        loop = sum(row[f'{p}_loop_{clock}_s'] for p in impls)
        fast = sum(row[f'{p}_fast_{clock}_s'] for p in impls)
        row[f'both_speedup_{clock}'] = loop / fast
    return row


def to_markdown(result: Dict) -> str:
    m = result['meta']
    lines = [
        f"Device: {m['device_name']} (cpu, {m['threads']} threads), torch {m['torch']}; "
        f"inputs {m['input_shape']}, NTK batch {m['batch']}, {m['num_points']} circle points, "
        f"{m['num_inits']} inits per proxy; medians over {m['rounds']} alternating rounds; "
        f"all values agree within {RTOL:g} relative: {'yes' if m['all_agree'] else 'NO'}. "
        'fast = NTK by module hooks (else vmap(grad)) / length distortion by one batched jvp '
        '(inputs up to 3x96x96) or per point by double backward (larger: then it is the '
        'loop\'s algorithm), loop = one backward per sample / one double-backward jvp per '
        'point.', '',
        '| model | params | proxy | fast | loop | rel. diff | fast s (wall / cpu) '
        '| loop s (wall / cpu) | speed-up wall | speed-up cpu |',
        '|---|---|---|---|---|---|---|---|---|---|'
    ]
    for r in result['rows']:
        if 'ntk_fast' not in r:
            continue
        for proxy, label in (('ntk', 'NTK kappa'), ('length', 'length distortion')):
            lines.append(
                f"| {r['model']} | {r['params']} | {label} | {r[f'{proxy}_fast']:.6g} | "
                f"{r[f'{proxy}_loop']:.6g} | {r[f'{proxy}_rel_diff']:.1e} | "
                f"{r[f'{proxy}_fast_wall_s']:.3f} / {r[f'{proxy}_fast_cpu_s']:.3f} | "
                f"{r[f'{proxy}_loop_wall_s']:.3f} / {r[f'{proxy}_loop_cpu_s']:.3f} | "
                f"{r[f'{proxy}_speedup_wall']:.2f}x | {r[f'{proxy}_speedup_cpu']:.2f}x |")
        lines.append(f"| {r['model']} | | both | | | | | | {r['both_speedup_wall']:.2f}x | "
                     f"{r['both_speedup_cpu']:.2f}x |")
    lines += ['', 'Both proxies against the network\'s own forward + backward (same batch, '
              'one per init; `proxy_timing`, timed in turn; goal <= 1.6x):', '',
              '| model | NTK s | length distortion s | forward + backward s | ratio |',
              '|---|---|---|---|---|']
    for r in result['rows']:
        lines.append(f"| {r['model']} | {r['floor_ntk_s']:.3f} | {r['floor_ld_s']:.3f} | "
                     f"{r['floor_fwd_bwd_s']:.3f} | {r['ratio_to_fwd_bwd']:.2f}x |")
    return '\n'.join(lines) + '\n'


def main(argv=None) -> Dict:
    args = parse_args(argv)
    if args.quick:
        args.rounds, args.num_inits = 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {k: MODELS[k] for k in (args.models or MODELS)}
    meta = dict(device_name=cpu_name(), loadavg_before=list(os.getloadavg()),
                threads=torch.get_num_threads(), torch=torch.__version__,
                input_shape=[INPUT_SHAPE[0], args.img_size, args.img_size], batch=args.batch,
                num_points=args.num_points,
                num_inits=args.num_inits, rounds=args.rounds, seed=args.seed)
    rows = []
    for i, (name, builder) in enumerate(models.items()):
        print(f'[{i + 1}/{len(models)}] {name}', flush=True)
        rows.append(bench_model(name, builder, args))
        r = rows[-1]
        for proxy in ('ntk', 'length') if 'ntk_fast' in r else ():
            print(f"    {proxy:6s} fast {r[f'{proxy}_fast']:.6g} loop {r[f'{proxy}_loop']:.6g} "
                  f"(rel diff {r[f'{proxy}_rel_diff']:.1e}); speed-up "
                  f"{r[f'{proxy}_speedup_wall']:.2f}x wall, {r[f'{proxy}_speedup_cpu']:.2f}x cpu",
                  flush=True)
        print(f"    both   {r['ratio_to_fwd_bwd']:.2f}x the network's forward + backward "
              f"({r['floor_proxies_s']:.2f} s / {r['floor_fwd_bwd_s']:.2f} s)", flush=True)
    meta['loadavg_after'] = list(os.getloadavg())
    meta['all_agree'] = all(r[f'{p}_agree'] for r in rows for p in ('ntk', 'length')
                            if f'{p}_agree' in r)
    result = dict(meta=meta, rows=rows)
    os.makedirs(args.out_dir, exist_ok=True)
    atomic_write(osp.join(args.out_dir, 'proxies.json'), json.dumps(result, indent=2))
    md = to_markdown(result)
    atomic_write(osp.join(args.out_dir, 'proxies.md'), md)
    print(md)
    return result


if __name__ == '__main__':
    main()
