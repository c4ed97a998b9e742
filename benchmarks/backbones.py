"""Backbone speed against timm at identical architecture, measured in one run.

    python benchmarks/backbones.py [--out-dir DIR] [--device cpu|cuda] [--quick]

For each pair (ScaledViT vs timm ViT at DeiT-Ti / DeiT-S, ScaledPiT vs timm PiT at Ti / XS)
it copies timm's random weights into ours (outputs are checked to agree), then measures
throughput at batch 32 and latency at batch 1, alternating the two models round by round so
drift hits both equally. It also measures the machine's dense fp32 matmul rate in the same
run and reports each model's share of it. Writes ``backbones.json`` and ``backbones.md``.
Speed goals live here, never as timed assertions in tests.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import time
from typing import Callable, Dict, List

import mmvitscale  # noqa: F401  (shims before timm / torchvision)
import timm
import torch
from torch import nn

from mmvitscale.cost import device_name, get_complexity
from mmvitscale.fileio import atomic_write
from mmvitscale.models import ScaledPiT, ScaledViT

PAIRS = {
    'deit-tiny': (lambda: ScaledViT('deit-tiny'), 'deit_tiny_patch16_224'),
    'deit-small': (lambda: ScaledViT('deit-small'), 'deit_small_patch16_224'),
    'pit-ti': (lambda: ScaledPiT('pit-ti'), 'pit_ti_224'),
    'pit-xs': (lambda: ScaledPiT('pit-xs'), 'pit_xs_224'),
}
QUICK_PAIRS = {'deit-tiny': PAIRS['deit-tiny'], 'pit-ti': PAIRS['pit-ti']}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='work_dirs/benchmarks')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=32, help='throughput batch size')
    parser.add_argument('--rounds', type=int, default=3, help='alternating rounds per pair')
    parser.add_argument('--iters', type=int, default=3, help='timed forwards per round (batch)')
    parser.add_argument('--latency-iters', type=int, default=10,
                        help='timed forwards per round (batch 1)')
    parser.add_argument('--models', nargs='+', choices=sorted(PAIRS), default=None)
    parser.add_argument('--quick', action='store_true',
                        help='two models, one round, tiny batch (smoke test of the script)')
    return parser.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _time(fn: Callable, iters: int, device: torch.device) -> float:
    """Median seconds of ``iters`` calls of ``fn``."""
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.inference_mode()
def matmul_rate(device: torch.device, n: int = 2048, iters: int = 5) -> float:
    """Dense fp32 matmul rate of this machine (multiply-accumulates per second).

    The best of ``iters`` timed ``n x n`` products: the machine's capability, which a busy
    moment can only lower. Measured once per round; the report keeps the best round.
    """
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float('inf')
    for _ in range(iters):
        best = min(best, _time(lambda: a @ b, 1, device))
    return n**3 / best


def _pre_logits(model: nn.Module) -> Callable:
    return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)


@torch.inference_mode()
def bench_pair(name: str, ours: nn.Module, ref: nn.Module, args, device: torch.device,
               peak: float) -> Dict:
    ours.load_state_dict(ref.state_dict(), strict=False)
    ours, ref = ours.to(device).eval(), ref.to(device).eval()
    x_b = torch.randn(args.batch, 3, 224, 224, device=device)
    x_1 = x_b[:1].clone()
    runs = {'mmvitscale': lambda x: ours(x)[-1], 'timm': _pre_logits(ref)}
    max_diff = (runs['mmvitscale'](x_1) - runs['timm'](x_1)).abs().max().item()
    for fn in runs.values():  # warm-up
        for _ in range(2):
            fn(x_b)
            fn(x_1)
    tput: Dict[str, List[float]] = {k: [] for k in runs}
    lat: Dict[str, List[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        peak = max(peak, matmul_rate(device))
        for key, fn in runs.items():
            tput[key].append(args.batch / _time(lambda: fn(x_b), args.iters, device))
            lat[key].append(1e3 * _time(lambda: fn(x_1), args.latency_iters, device))
    macs = get_complexity(ours, (3, 224, 224))['flops']
    row = dict(model=name, macs_per_image=macs, max_abs_diff=max_diff, matmul_macs_s=peak)
    for key in runs:
        row[f'{key}_img_s'] = statistics.median(tput[key])
        row[f'{key}_latency_ms'] = statistics.median(lat[key])
        row[f'{key}_matmul_share'] = row[f'{key}_img_s'] * macs / peak
    row['throughput_ratio'] = row['mmvitscale_img_s'] / row['timm_img_s']
    row['latency_ratio'] = row['timm_latency_ms'] / row['mmvitscale_latency_ms']
    return row


def to_markdown(result: Dict) -> str:
    m = result['meta']
    lines = [
        f"Device: {m['device_name']} ({m['device']}, {m['threads']} threads), torch "
        f"{m['torch']}, timm {m['timm']}; dense fp32 matmul rate "
        f"{m['matmul_gmacs']:.1f} GMAC/s; batch {m['batch']} throughput, batch 1 latency "
        '(medians over alternating rounds).', '',
        '| model | ours img/s | timm img/s | throughput ratio | ours ms (b1) | timm ms (b1) '
        '| latency ratio | ours % of matmul rate | timm % of matmul rate |',
        '|---|---|---|---|---|---|---|---|---|'
    ]
    for r in result['rows']:
        lines.append(
            f"| {r['model']} | {r['mmvitscale_img_s']:.1f} | {r['timm_img_s']:.1f} | "
            f"{r['throughput_ratio']:.3f}x | {r['mmvitscale_latency_ms']:.2f} | "
            f"{r['timm_latency_ms']:.2f} | {r['latency_ratio']:.3f}x | "
            f"{100 * r['mmvitscale_matmul_share']:.1f}% | {100 * r['timm_matmul_share']:.1f}% |")
    return '\n'.join(lines) + '\n'


def main(argv=None) -> Dict:
    args = parse_args(argv)
    pairs = QUICK_PAIRS if args.quick else PAIRS
    if args.models:
        pairs = {k: PAIRS[k] for k in args.models}
    if args.quick:
        args.batch, args.rounds, args.iters, args.latency_iters = 2, 1, 1, 1
    device = torch.device(args.device)
    torch.manual_seed(0)
    peak = matmul_rate(device)
    meta = dict(device=str(device), device_name=device_name(str(device)),
                threads=torch.get_num_threads(), torch=torch.__version__,
                timm=timm.__version__, batch=args.batch, rounds=args.rounds)
    rows = []
    for i, (key, (make_ours, timm_name)) in enumerate(pairs.items()):
        print(f'[{i + 1}/{len(pairs)}] {key} vs timm {timm_name}', flush=True)
        rows.append(bench_pair(key, make_ours(), timm.create_model(timm_name), args, device,
                               peak))
        r = rows[-1]
        print(f"    throughput {r['throughput_ratio']:.3f}x, latency {r['latency_ratio']:.3f}x,"
              f" {100 * r['mmvitscale_matmul_share']:.1f}% of matmul rate", flush=True)
    meta['matmul_gmacs'] = max(r['matmul_macs_s'] for r in rows) / 1e9
    for r in rows:  # shares against the best rate seen in the whole run
        for key in ('mmvitscale', 'timm'):
            r[f'{key}_matmul_share'] = r[f'{key}_img_s'] * r['macs_per_image'] / (
                meta['matmul_gmacs'] * 1e9)
    result = dict(meta=meta, rows=rows)
    os.makedirs(args.out_dir, exist_ok=True)
    atomic_write(osp.join(args.out_dir, 'backbones.json'), json.dumps(result, indent=2))
    md = to_markdown(result)
    atomic_write(osp.join(args.out_dir, 'backbones.md'), md)
    print(md)
    return result


if __name__ == '__main__':
    main()
