"""Reading a checkpoint with mmvitscale's safe reader vs ``torch.load(weights_only=True)``.

    python benchmarks/safe_loading.py [--params 22000000] [--repeats 5] [--out FILE.json]

Saves a ViT-shaped state dict (``--params`` float32 parameters in 12 blocks, an mmengine-like
``meta`` with a history buffer) in torch's zip format, then times both readers on it (median of
``--repeats``, after one warm-up each) and prints the ratio safe / torch. Also the peak-RSS
increase of each reader, measured in a child process per reader (``/proc/self/clear_refs``).
Writes the numbers as JSON (``--out``).
"""
import json
import os
import subprocess
import sys
import tempfile

import torch

CHILD = r'''
import sys, torch
from mmvitscale.checkpoint import safe_torch_load
from mmvitscale.cost.protocol import peak_rss_increase
load = safe_torch_load if sys.argv[2] == 'safe' else torch.load
kwargs = {} if sys.argv[2] == 'safe' else dict(weights_only=True)
print(peak_rss_increase(lambda: load(sys.argv[1], map_location='cpu', **kwargs)))
'''


def state_dict(params: int) -> dict:
    width = max(8, int((params / 12 / 12) ** 0.5))  # 12 blocks of ~12 * width**2 parameters
    out = {}
    for i in range(12):
        out[f'blocks.{i}.attn.qkv.weight'] = torch.randn(3 * width, width)
        out[f'blocks.{i}.attn.proj.weight'] = torch.randn(width, width)
        out[f'blocks.{i}.mlp.fc1.weight'] = torch.randn(4 * width, width)
        out[f'blocks.{i}.mlp.fc2.weight'] = torch.randn(width, 4 * width)
        out[f'blocks.{i}.norm1.weight'] = torch.ones(width)
    return out


def main(argv=None) -> dict:
    from mmvitscale.cost.protocol import median_seconds, size_and_repeats
    args = size_and_repeats(__doc__.splitlines()[0], '--params', 22_000_000, 1000, argv)
    from mmvitscale.checkpoint import safe_torch_load
    sd = state_dict(args.params)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'vit.pth')
        torch.save({'state_dict': sd, 'meta': {'epoch': 3, 'seed': 0}}, path)
        size = os.path.getsize(path)
        safe = median_seconds(lambda: safe_torch_load(path, map_location='cpu'), args.repeats)
        peer = median_seconds(lambda: torch.load(path, map_location='cpu', weights_only=True),
                              args.repeats)
        peaks = {}
        for reader in ('safe', 'torch'):
            out = subprocess.run([sys.executable, '-c', CHILD, path, reader], check=True,
                                 capture_output=True, text=True)
            peaks[reader] = int(out.stdout.strip().splitlines()[-1])
    result = dict(params=sum(v.numel() for v in sd.values()), file_bytes=size,
                  safe_s=safe, torch_weights_only_s=peer, ratio=safe / peer,
                  safe_peak_rss_increase=peaks['safe'], torch_peak_rss_increase=peaks['torch'],
                  loadavg=open('/proc/loadavg').read().split()[:3])
    print(f"{result['params']} params, {size / 2**20:.1f} MiB: safe {safe * 1000:.1f} ms, "
          f"torch.load(weights_only=True) {peer * 1000:.1f} ms, ratio {safe / peer:.2f}; "
          f"peak RSS +{peaks['safe'] / 2**20:.0f} / +{peaks['torch'] / 2**20:.0f} MiB")
    if args.out:
        from mmvitscale.fileio import atomic_write
        atomic_write(args.out, json.dumps(result, indent=2) + '\n')
    return result


if __name__ == '__main__':
    main()
