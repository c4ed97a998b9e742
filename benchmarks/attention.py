"""Softmax vs Castling-ViT linear-angular attention: latency and FLOPs against resolution.

ScaledViT-Ti (deit-tiny, patch 16), eager CPU, batch 1, inference models (no auxiliary branch).
Resolutions grow until the list ends or the time budget is spent; the crossover is the first
resolution from which linear-angular attention stays faster. Writes ``attention.md``,
``attention.json`` and ``attention.png`` (each atomically) to ``--out-dir``.

    python benchmarks/attention.py --out-dir work_dirs/bench
"""
import argparse
import json
import os
import os.path as osp
import platform
import subprocess
import time
from typing import Dict, List, Optional, Sequence

import torch

import mmvitscale  # noqa: F401  (shims first)
from mmvitscale.cost import cpu_name, measure_latency, vit_flops
from mmvitscale.fileio import atomic_write, save_figure
from mmvitscale.models import ScaledViT

ATTN = ('softmax', 'linear_angular')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--resolutions', type=int, nargs='+',
                   default=[224, 320, 448, 640, 896, 1024])
    p.add_argument('--repeats', type=int, default=3, help='timed runs per point')
    p.add_argument('--kernel', type=int, default=9, help='linear_kernel_size')
    p.add_argument('--budget-s', type=float, default=240.0,
                   help='stop starting new resolutions after this many seconds')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch)')
    p.add_argument('--out-dir', default='work_dirs/bench_attention')
    return p.parse_args(argv)


def machine_load() -> Dict[str, object]:
    try:
        uptime = subprocess.run(['uptime'], capture_output=True, text=True,
                                timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = ''
    return dict(loadavg=list(os.getloadavg()), uptime=uptime, cpus=os.cpu_count())


def bench_point(res: int, attn_type: str, args: argparse.Namespace) -> Dict[str, float]:
    model = ScaledViT('deit-tiny', img_size=res, attn_type=attn_type,
                      linear_kernel_size=args.kernel).eval()
    lat = measure_latency(model, (3, res, res), warmup_s=0.0, min_warmup=2,
                          repeats=args.repeats)
    flops = vit_flops(model.arch_spec, num_classes=0, attn_type=attn_type,
                      linear_kernel_size=args.kernel)
    return dict(median_ms=lat['median_ms'], p10_ms=lat['p10_ms'], p90_ms=lat['p90_ms'],
                gflops=flops['total'] / 1e9, attn_gflops=(flops['attention'] +
                                                          flops.get('dwconv', 0)) / 1e9)


def crossover(rows: List[Dict]) -> Optional[int]:
    """First resolution from which linear-angular is faster at every larger tested one."""
    best = None
    for r in reversed(rows):
        if r['linear_angular']['median_ms'] < r['softmax']['median_ms']:
            best = r['resolution']
        else:
            break
    return best


def to_markdown(result: Dict) -> str:
    meta = result['meta']
    lines = [
        f"ScaledViT-Ti (patch 16), batch 1, eager CPU ({meta['cpu']}, {meta['threads']} "
        f"threads, torch {meta['torch']}), median of {meta['repeats']} runs; "
        f"linear_kernel_size={meta['kernel']}.",
        f"Load before: {meta['load_before']['uptime']}; after: {meta['load_after']['uptime']}",
        '',
        '| resolution | tokens | softmax ms | linear-angular ms | speed-up | softmax GMACs | '
        'linear GMACs | attn GMACs softmax / linear |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for r in result['rows']:
        s, li = r['softmax'], r['linear_angular']
        lines.append(f"| {r['resolution']} | {r['tokens']} | {s['median_ms']:.1f} | "
                     f"{li['median_ms']:.1f} | {s['median_ms'] / li['median_ms']:.2f}x | "
                     f"{s['gflops']:.2f} | {li['gflops']:.2f} | "
                     f"{s['attn_gflops']:.2f} / {li['attn_gflops']:.2f} |")
    cross = result['crossover']
    lines += ['', f"Crossover (linear-angular faster from here on): "
              f"{cross if cross is not None else 'not reached in the tested range'}"]
    if result.get('skipped'):
        lines.append(f"Skipped (time budget): {result['skipped']}")
    return '\n'.join(lines) + '\n'


def plot(result: Dict, path: str) -> None:
    from mmvitscale.fileio import pyplot
    plt = pyplot()
    res = [r['resolution'] for r in result['rows']]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (('softmax', 'softmax'), ('linear_angular', 'linear-angular')):
        ax1.plot(res, [r[key]['median_ms'] for r in result['rows']], 'o-', label=label)
        ax2.plot(res, [r[key]['gflops'] for r in result['rows']], 'o-', label=label)
    if result['crossover'] is not None:
        ax1.axvline(result['crossover'], color='grey', ls='--', label='crossover')
    ax1.set(xlabel='input resolution', ylabel='latency (ms, batch 1)', yscale='log')
    ax2.set(xlabel='input resolution', ylabel='GMACs', yscale='log')
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle('ScaledViT-Ti: softmax vs linear-angular attention (CPU)')
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    meta = dict(cpu=cpu_name(), platform=platform.platform(), threads=torch.get_num_threads(),
                torch=torch.__version__, repeats=args.repeats, kernel=args.kernel,
                load_before=machine_load())
    rows, skipped, start = [], [], time.perf_counter()
    for res in args.resolutions:
        if time.perf_counter() - start > args.budget_s:
            skipped.append(res)
            continue
        row = dict(resolution=res, tokens=(res // 16)**2 + 1)
        for attn_type in ATTN:
            row[attn_type] = bench_point(res, attn_type, args)
        rows.append(row)
        print(f"{res}: softmax {row['softmax']['median_ms']:.1f} ms, linear-angular "
              f"{row['linear_angular']['median_ms']:.1f} ms", flush=True)
    meta['load_after'] = machine_load()
    meta['wall_s'] = time.perf_counter() - start
    result = dict(meta=meta, rows=rows, crossover=crossover(rows), skipped=skipped)
    os.makedirs(args.out_dir, exist_ok=True)
    atomic_write(osp.join(args.out_dir, 'attention.json'), json.dumps(result, indent=2))
    md = to_markdown(result)
    atomic_write(osp.join(args.out_dir, 'attention.md'), md)
    plot(result, osp.join(args.out_dir, 'attention.png'))
    print(md)
    return result


if __name__ == '__main__':
    main()
