"""Make the COCO-format Fashion-MNIST detection dataset (mmdet ``CocoDataset``), offline.

    python tools/data/make_det.py [--out data/fashion_mnist_det] [--num-train 2000] ...

Items are pasted without overlap on black canvases; boxes are the tight boxes of the items'
nonzero pixels. Same arguments -> byte-identical files. An existing valid output with the same
arguments is kept as is; anything else at ``--out`` is refused unless ``--overwrite``.
"""
import argparse

import mmvitscale  # noqa: F401  (stack shims first)
from mmvitscale.datasets.det import check_det_params, generate_det
from mmvitscale.datasets.generators import add_generator_flags, generator_tool

PARAMS = ('num_train', 'num_val', 'canvas', 'min_objects', 'max_objects', 'min_size',
          'max_size', 'seed')


def build_parser() -> argparse.ArgumentParser:
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
    return add_generator_flags(parser)


def main(argv=None) -> dict:
    return generator_tool(build_parser(), argv, PARAMS, check_det_params, generate_det)


if __name__ == '__main__':
    main()
