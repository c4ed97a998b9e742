"""Make the COCO-format Fashion-MNIST detection dataset (mmdet ``CocoDataset``), offline.

    python tools/data/make_det.py [--out data/fashion_mnist_det] [--num-train 2000] ...

Items are pasted without overlap on black canvases; boxes are the tight boxes of the items'
nonzero pixels. Same arguments -> byte-identical files. An existing valid output with the same
arguments is kept as is; anything else at ``--out`` is refused unless ``--overwrite``.
"""
import argparse

import mmvitscale  # noqa: F401  (stack shims first)
from mmvitscale.datasets.det import check_det_params, generate_det
from mmvitscale.datasets.generators import cli_flag, run_cli

PARAMS = ('num_train', 'num_val', 'canvas', 'min_objects', 'max_objects', 'min_size',
          'max_size', 'seed')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/fmnist_det',
                        help='output folder (where configs/_base_/det_fashion_mnist.py looks)')
    parser.add_argument('--num-train', type=int, default=2000, help='train images')
    parser.add_argument('--num-val', type=int, default=500, help='val images')
    parser.add_argument('--canvas', type=int, default=128, help='image side (px)')
    parser.add_argument('--min-objects', type=int, default=1, help='fewest items per image')
    parser.add_argument('--max-objects', type=int, default=4, help='most items per image')
    parser.add_argument('--min-size', type=int, default=28, help='smallest item side (px)')
    parser.add_argument('--max-size', type=int, default=56, help='largest item side (px)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--source', default=None, help='folder with the Fashion-MNIST idx files')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    args = parser.parse_args(argv)
    try:
        check_det_params({k: getattr(args, k) for k in PARAMS}, flag=cli_flag)
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    return run_cli(args.out, lambda: generate_det(
        args.out, **{k: getattr(args, k) for k in PARAMS}, overwrite=args.overwrite,
        source=args.source, show_progress=not args.no_progress))


if __name__ == '__main__':
    main()
