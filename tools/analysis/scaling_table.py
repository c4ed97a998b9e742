"""Cost table of ViT presets and scaled variants: params, FLOPs (attention counted), latency.

    python tools/analysis/scaling_table.py [--out-dir DIR] [--repeats N] [--threads T]

Writes ``scaling_table.json`` and ``scaling_table.md`` to ``--out-dir`` and prints the table.
Latency: batch 1, eager PyTorch on this machine's CPU, median of ``--repeats`` timed runs after
a warm-up (see :func:`mmvitscale.cost.measure_latency`).
"""
import argparse
import json
import os
import os.path as osp

import mmvitscale  # noqa: F401
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table
from torch import nn

from mmvitscale.cost import cpu_name, get_complexity, measure_latency, vit_flops
from mmvitscale.fileio import atomic_write
from mmvitscale.models import ScaledViT

# (name, preset, scaling rule); rules are plain data, see mmvitscale.scaling.
DEFAULT_ROWS = (
    ('DeiT-Ti', 'deit-tiny', None),
    ('DeiT-S', 'deit-small', None),
    ('DeiT-B', 'deit-base', None),
    ('Ti deeper-narrower', 'deit-tiny', dict(depth=18, width_mult=0.8)),
    ('Ti wider-shallower', 'deit-tiny', dict(depth=8, width_mult=1.25)),
    ('Ti 4 heads, mlp 3', 'deit-tiny', dict(heads=4, mlp_ratio=3.0, depth=14)),
    ('Ti 320px patch 20', 'deit-tiny', dict(resolution=320, patch_size=20)),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='work_dirs/scaling_table')
    parser.add_argument('--repeats', type=int, default=20, help='timed runs per model')
    parser.add_argument('--warmup', type=float, default=0.5, help='warm-up seconds per model')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--no-latency', action='store_true', help='skip latency measurement')
    return parser.parse_args(argv)


def build_row(name, preset, rule, args) -> dict:
    backbone = ScaledViT(arch=preset, scaling=rule)
    backbone.init_weights()
    spec = backbone.arch_spec
    model = nn.Sequential(backbone, _Head(spec.embed_dims, 1000))
    shape = (3, *spec.img_size)
    cost = get_complexity(model, shape)
    row = dict(name=name, preset=preset, scaling=rule or {}, depth=spec.num_layers,
               width=spec.embed_dims, heads=spec.num_heads, mlp_ratio=spec.mlp_ratio,
               resolution=spec.img_size[0], patch_size=spec.patch_size,
               tokens=spec.grid[0] * spec.grid[1] + 1, params_m=cost['params'] / 1e6,
               gflops=cost['flops'] / 1e9,
               gflops_attention=cost['by_op'].get(
                   '_scaled_dot_product_flash_attention_for_cpu', 0) / 1e9,
               gflops_analytic=vit_flops(spec)['total'] / 1e9)
    if not args.no_latency:
        lat = measure_latency(model, shape, warmup_s=args.warmup, repeats=args.repeats)
        row.update(latency_ms=lat['median_ms'], latency_p10_ms=lat['p10_ms'],
                   latency_p90_ms=lat['p90_ms'])
    return row


class _Head(nn.Module):
    """Linear classifier on the backbone's cls-token tuple."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, classes)

    def forward(self, feats):
        return self.fc(feats[-1])


def to_markdown(rows, meta) -> str:
    cols = ['name', 'depth', 'width', 'heads', 'mlp_ratio', 'resolution', 'patch_size',
            'tokens', 'params_m', 'gflops', 'gflops_attention']
    if 'latency_ms' in rows[0]:
        cols.append('latency_ms')
    lines = [f"Device: {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}, "
             'eager, batch 1 (median ms).', '',
             '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for r in rows:
        cells = [f'{r[c]:.3f}' if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [build_row(*r, args) for r in track(DEFAULT_ROWS, description='measuring')]
    meta = dict(cpu=cpu_name(), threads=torch.get_num_threads(),
                torch=torch.__version__)
    os.makedirs(args.out_dir, exist_ok=True)
    atomic_write(osp.join(args.out_dir, 'scaling_table.json'),
                 json.dumps(dict(meta=meta, rows=rows), indent=2))
    md = to_markdown(rows, meta)
    atomic_write(osp.join(args.out_dir, 'scaling_table.md'), md)

    table = Table(title='ViT presets and scaled variants (FLOPs = MACs, attention counted)')
    for col in ('model', 'D', 'L', 'H', 'r', 'res/p', 'params M', 'GFLOPs', 'attn G', 'ms'):
        table.add_column(col, justify='right' if col != 'model' else 'left')
    for r in rows:
        table.add_row(r['name'], str(r['width']), str(r['depth']), str(r['heads']),
                      f"{r['mlp_ratio']:g}", f"{r['resolution']}/{r['patch_size']}",
                      f"{r['params_m']:.2f}", f"{r['gflops']:.3f}",
                      f"{r['gflops_attention']:.3f}",
                      f"{r['latency_ms']:.1f}" if 'latency_ms' in r else '-')
    Console(width=110).print(table)
    print(f'wrote {osp.join(args.out_dir, "scaling_table.md")} and .json')
    return rows


if __name__ == '__main__':
    main()
