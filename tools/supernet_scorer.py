"""Weight-sharing supernet scorer (issue 5): train one supernet, score subnets, check ranking.

1. Train ONE widest / deepest ScaledViT supernet on offline Fashion-MNIST with the sandwich rule
   (largest + smallest + ``--num-random`` random subnets per step).
2. Score ``--subnets`` subnets (largest, smallest, the rest drawn at random from the space) with
   the shared weights on a validation subset (the Fashion-MNIST test split), no retraining.
3. Train each of those subnets from scratch with one equal short budget and evaluate it on the
   same subset; report Kendall's tau between the two accuracy lists.

Outputs (atomic) in ``--work-dir``: ``supernet_scores.json``, ``supernet_scores.md``,
``supernet_vs_scratch.png`` and ``supernet.pth``. The defaults run in about 7.5 minutes on one
busy CPU thread; raise ``--super-images`` / ``--super-epochs`` / ``--scratch-*`` for more.

Example::

    python tools/supernet_scorer.py --work-dir work_dirs/supernet
"""
import argparse
import json
import os
import os.path as osp
import platform
import random
import sys
import time

import mmvitscale  # noqa: F401  isort:skip  (shims before mmengine / host packages)
import torch

from mmvitscale.datasets.fashion_mnist import load_split
from mmvitscale.fileio import atomic_path, atomic_write, save_figure
from mmvitscale.search.supernet import (SlicedViT, SubnetArch, ViTClassifier, evaluate,
                                        prepare_images, resize, score_subnets, search_space,
                                        smallest_subnet, train_model, train_supernet)

DEFAULT_DATA = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data',
                        'fashion_mnist')


def ints(s):
    return [int(v) for v in s.split(',') if v]


def floats(s):
    return [float(v) for v in s.split(',') if v]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data-root', default=DEFAULT_DATA if osp.isdir(DEFAULT_DATA) else None,
                   help='folder with the Fashion-MNIST idx files')
    p.add_argument('--work-dir', default='work_dirs/supernet')
    p.add_argument('--embed-dims', type=int, default=96)
    p.add_argument('--num-layers', type=int, default=8)
    p.add_argument('--num-heads', type=int, default=4)
    p.add_argument('--mlp-ratio', type=float, default=4.0)
    p.add_argument('--img-size', type=int, default=32)
    p.add_argument('--patch-size', type=int, default=4)
    p.add_argument('--depths', type=ints, default=[2, 4, 6, 8])
    p.add_argument('--widths', type=ints, default=[48, 72, 96],
                   help='embed dims; heads = width / supernet head dim')
    p.add_argument('--mlp-ratios', type=floats, default=[2.0, 3.0, 4.0])
    p.add_argument('--resolutions', type=ints, default=[16, 24, 32])
    p.add_argument('--super-images', type=int, default=10000)
    p.add_argument('--super-epochs', type=int, default=3)
    p.add_argument('--num-random', type=int, default=2, help='random subnets per sandwich step')
    p.add_argument('--subnets', type=int, default=12, help='K subnets scored and retrained')
    p.add_argument('--scratch-images', type=int, default=3000)
    p.add_argument('--scratch-epochs', type=int, default=2)
    p.add_argument('--skip-scratch', action='store_true', help='only score (no tau)')
    p.add_argument('--val-images', type=int, default=2000)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--weight-decay', type=float, default=0.05)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--log-every', type=int, default=20)
    return p.parse_args(argv)


def log(msg):
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def pick_subnets(space, sup, k, seed):
    """Largest, smallest and k-2 distinct random others (deterministic in ``seed``)."""
    small = smallest_subnet(space)
    rest = [a for a in space if a not in (sup, small)]
    rng = random.Random(seed + 1)
    return [sup, small] + rng.sample(rest, min(max(0, k - 2), len(rest)))


def kendall(a, b):
    """Kendall's tau-b and its p-value (nan with fewer than 2 values or a constant side)."""
    from mmvitscale.experiments.stats import kendall_tau
    res = kendall_tau(a, b)
    return res.tau, res.p_value


def to_markdown(report):
    lines = ['# Weight-sharing supernet scorer', '',
             f"Supernet `{report['supernet']['label']}`, sandwich rule (largest + smallest + "
             f"{report['config']['num_random']} random), {report['config']['super_images']} "
             f"images x {report['config']['super_epochs']} epochs "
             f"({report['supernet_train']['seconds']:.0f} s). Validation: "
             f"{report['config']['val_images']} Fashion-MNIST test images.", '']
    if report.get('kendall_tau') is not None:
        lines += [f"**Kendall tau (supernet score vs. scratch accuracy): "
                  f"{report['kendall_tau']:.3f}** (p = {report['kendall_p']:.3g}, "
                  f"K = {len(report['subnets'])}; scratch budget "
                  f"{report['config']['scratch_images']} images x "
                  f"{report['config']['scratch_epochs']} epochs each)", '']
    lines += ['| subnet | params | supernet acc | scratch acc |', '|---|---:|---:|---:|']
    for s in report['subnets']:
        sc = s.get('scratch_accuracy')
        lines.append(f"| `{s['label']}` | {s['params']:,} | {s['accuracy']:.4f} | "
                     f"{'-' if sc is None else f'{sc:.4f}'} |")
    lines += ['', f"Total wall time {report['wall_seconds']:.0f} s, torch threads "
              f"{report['config']['threads']}, load average at start "
              f"{report['load_start']} / end {report['load_end']}.", '']
    return '\n'.join(lines)


def plot(report, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    xs = [s['accuracy'] for s in report['subnets']]
    ys = [s['scratch_accuracy'] for s in report['subnets']]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(xs, ys)
    for s in report['subnets']:
        ax.annotate(s['label'], (s['accuracy'], s['scratch_accuracy']), fontsize=6)
    ax.set_xlabel('supernet (shared-weight) accuracy')
    ax.set_ylabel('trained-from-scratch accuracy')
    ax.set_title(f"Kendall tau = {report['kendall_tau']:.3f} (K={len(xs)})")
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    load_start = ' '.join(f'{v:.2f}' for v in os.getloadavg())
    sup = SubnetArch(args.embed_dims, args.num_layers, args.num_heads, args.mlp_ratio,
                     args.img_size, args.patch_size)
    space = search_space(sup, args.depths, args.widths, args.mlp_ratios, args.resolutions)
    if sup not in space:
        space.append(sup)
    log(f'supernet {sup.label}; search space {len(space)} subnets')

    tr_x, tr_y = load_split('train', args.data_root)
    va_x, va_y = load_split('test', args.data_root)
    g = torch.Generator().manual_seed(args.seed)
    tr_idx = torch.randperm(len(tr_x), generator=g)
    va_idx = torch.randperm(len(va_x), generator=g)[:args.val_images].numpy()
    pad = max(args.img_size, 28)
    super_idx = tr_idx[:args.super_images].numpy()
    train_images = prepare_images(tr_x[super_idx], pad)
    train_labels = torch.from_numpy(tr_y[super_idx].astype('int64'))
    val_images = prepare_images(va_x[va_idx], pad)
    val_labels = torch.from_numpy(va_y[va_idx].astype('int64'))
    if pad != args.img_size:
        train_images, val_images = resize(train_images, args.img_size), resize(
            val_images, args.img_size)

    log(f'training the supernet on {len(train_images)} images x {args.super_epochs} epochs')
    supernet = SlicedViT(sup, in_channels=1, num_classes=10)
    sn_stats = train_supernet(supernet, space, train_images, train_labels, args.super_epochs,
                              args.batch_size, args.lr, args.weight_decay, args.num_random,
                              args.seed, log=log, log_every=args.log_every)
    with atomic_path(osp.join(args.work_dir, 'supernet.pth')) as tmp:
        torch.save(dict(state_dict=supernet.state_dict(), arch=sup.as_dict()), tmp)

    archs = pick_subnets(space, sup, args.subnets, args.seed)
    log(f'scoring {len(archs)} subnets with the shared weights')
    scores = score_subnets(supernet, archs, val_images, val_labels)
    for s, arch in zip(scores, archs):
        s['params'] = sum(p.numel() for p in ViTClassifier(arch).parameters())
        log(f"  {s['label']}: supernet acc {s['accuracy']:.4f}")

    # from-scratch reference: the same images (first scratch_images of the supernet's order)
    scratch_n = min(args.scratch_images, len(tr_idx))
    sc_idx = tr_idx[:scratch_n].numpy()
    sc_images = prepare_images(tr_x[sc_idx], pad)
    if pad != args.img_size:
        sc_images = resize(sc_images, args.img_size)
    sc_labels = torch.from_numpy(tr_y[sc_idx].astype('int64'))
    tau = p_value = None
    if not args.skip_scratch:
        for i, (s, arch) in enumerate(zip(scores, archs)):
            torch.manual_seed(args.seed + 100 + i)
            model = ViTClassifier(arch, in_channels=1, num_classes=10)
            st = train_model(model, sc_images, sc_labels, arch.img_size, args.scratch_epochs,
                             args.batch_size, args.lr, args.weight_decay, args.seed + i,
                             log=None)
            model.eval()
            s['scratch_accuracy'] = evaluate(model, val_images, val_labels, arch.img_size)
            s['scratch_seconds'] = st['seconds']
            log(f"  scratch {i + 1}/{len(archs)} {s['label']}: acc "
                f"{s['scratch_accuracy']:.4f} ({st['seconds']:.1f}s)")
        tau, p_value = kendall([s['accuracy'] for s in scores],
                               [s['scratch_accuracy'] for s in scores])
        log(f'Kendall tau = {tau:.3f} (p = {p_value:.3g})')

    report = dict(
        supernet=dict(arch=sup.as_dict(), label=sup.label),
        search_space_size=len(space),
        config={k: v for k, v in vars(args).items()},
        supernet_train=sn_stats,
        subnets=scores,
        kendall_tau=tau,
        kendall_p=p_value,
        wall_seconds=time.perf_counter() - t_start,
        load_start=load_start,
        load_end=' '.join(f'{v:.2f}' for v in os.getloadavg()),
        torch=torch.__version__,
        python=platform.python_version(),
        command=' '.join([osp.basename(sys.argv[0])] + (sys.argv[1:] if argv is None
                                                        else list(argv))),
    )
    os.makedirs(args.work_dir, exist_ok=True)
    atomic_write(osp.join(args.work_dir, 'supernet_scores.json'),
                 json.dumps(report, indent=2) + '\n')
    atomic_write(osp.join(args.work_dir, 'supernet_scores.md'), to_markdown(report))
    if tau is not None:
        plot(report, osp.join(args.work_dir, 'supernet_vs_scratch.png'))
    log(f"done in {report['wall_seconds']:.0f} s -> {args.work_dir}")
    return report


if __name__ == '__main__':
    main()
