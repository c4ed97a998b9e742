"""CPU attention kernels behind the As-ViT proxies' cost: fused SDPA vs the math path.

    python benchmarks/sdpa_kernels.py [--shapes 64,4,784,8 16,4,784,8] [--threads 1]
        [--network-img 224] [--out work_dirs/benchmarks/sdpa_kernels.json]

Times forward and backward (sum of outputs) of ``F.scaled_dot_product_attention`` with the
default CPU kernel (flash) and with the math backend (the one that supports double backward and
forward-mode AD, which the length distortion needs) for ``(batch, heads, tokens, head_dim)``
shapes; the default shape is stage 1 of As-ViT's seed topology at 224 px and NTK batch 16
(16 samples x 4 windows of 28 x 28 tokens, 4 heads of dim 8). With ``--network-img`` it also
times the seed topology's own forward (with grad) and backward at that size and batch 16: the
floor under the NTK proxy. Minimum of ``--repeats`` runs; writes JSON atomically.
"""
import argparse
import json
import os
import platform
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import mmvitscale  # noqa: F401  (shims first)
from mmvitscale.fileio import atomic_write


def _shape(text: str) -> List[int]:
    parts = text.split(',')
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f'a shape is batch,heads,tokens,head_dim (positive integers), got {text!r}')
    return [int(p) for p in parts]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--shapes', type=_shape, nargs='+', default=[[64, 4, 784, 8]],
                   help='batch,heads,tokens,head_dim (default: As-ViT seed stage 1, 224 px)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--network-img', type=int, default=None,
                   help='also time the As-ViT seed topology at this input side, batch 16')
    p.add_argument('--out', default='work_dirs/benchmarks/sdpa_kernels.json')
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        p.error(f'--threads and --repeats must be >= 1, got {args.threads} and {args.repeats}')
    return args


def _fwd_bwd(run: Callable[[], torch.Tensor], repeats: int) -> Dict[str, float]:
    run().sum().backward()  # warm-up
    best_f = best_b = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        t1 = time.perf_counter()
        out.sum().backward()
        t2 = time.perf_counter()
        best_f, best_b = min(best_f, t1 - t0), min(best_b, t2 - t1)
    return dict(forward_s=best_f, backward_s=best_b)


def time_kernels(shape: Sequence[int], repeats: int) -> Dict[str, Dict[str, float]]:
    gen = torch.Generator().manual_seed(0)
    q, k, v = [torch.randn(*shape, generator=gen, requires_grad=True) for _ in range(3)]
    out = {}
    for name, backends in (('default', None), ('math', [SDPBackend.MATH])):
        def run() -> torch.Tensor:
            if backends is None:
                return F.scaled_dot_product_attention(q, k, v)
            with sdpa_kernel(backends):
                return F.scaled_dot_product_attention(q, k, v)
        out[name] = _fwd_bwd(run, repeats)
    return out


def time_network(img: int, repeats: int) -> Dict[str, float]:
    from mmvitscale.models import AsViT
    from mmvitscale.search.proxies import pool_features
    from mmvitscale.search.topology import genotype_to_arch
    model = AsViT(genotype_to_arch('8,2,3|4,1,2|4,1,4|4,1,6|32'), img_size=img,
                  out_type='avg_featmap', final_norm=False)
    model.init_weights()
    x = torch.randn(16, 3, img, img, generator=torch.Generator().manual_seed(0))
    return _fwd_bwd(lambda: pool_features(model(x)), repeats)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for shape in args.shapes:
        res = time_kernels(shape, args.repeats)
        rows.append(dict(shape=list(shape), **res))
        d, m = res['default'], res['math']
        print(f'{tuple(shape)}: default fwd {d["forward_s"]:.3f} s bwd {d["backward_s"]:.3f} s; '
              f'math fwd {m["forward_s"]:.3f} s bwd {m["backward_s"]:.3f} s', flush=True)
    result = dict(threads=args.threads, repeats=args.repeats, torch=torch.__version__,
                  machine=platform.machine(), loadavg=list(os.getloadavg()), kernels=rows)
    if args.network_img:
        net = time_network(args.network_img, args.repeats)
        result['network'] = dict(img=args.network_img, batch=16, **net)
        print(f'As-ViT seed topology, {args.network_img} px, batch 16: forward '
              f'{net["forward_s"]:.3f} s, backward {net["backward_s"]:.3f} s', flush=True)
    atomic_write(args.out, json.dumps(result, indent=2) + '\n')
    print(f'wrote {args.out}')
    return result


if __name__ == '__main__':
    main()
