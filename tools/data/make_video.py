"""Make the Fashion-MNIST motion-direction video dataset (mmaction2 ``VideoDataset``), offline.

    python tools/data/make_video.py [--out data/fashion_mnist_motion] [--num-train 2000] ...

An item slides across a black canvas; the label (8 directions) depends on the motion only, and
clips come in opposite-direction pairs so frame order is needed to solve it (see
``mmvitscale/datasets/video.py``). Same arguments -> byte-identical files. An existing valid
output with the same arguments is kept as is; anything else at ``--out`` is refused unless
``--overwrite``.
"""
import argparse

import mmvitscale  # noqa: F401  (stack shims first)
from mmvitscale.datasets.generators import add_generator_flags, generator_tool
from mmvitscale.datasets.video import check_video_params, generate_video

PARAMS = ('num_train', 'num_val', 'frames', 'size', 'item_size', 'min_travel', 'fps', 'seed',
          'max_travel', 'distractors', 'noise')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/fmnist_video',
                        help='output folder (where configs/_base_/video_fashion_mnist.py looks)')
    parser.add_argument('--num-train', type=int, default=2000, help='train clips')
    parser.add_argument('--num-val', type=int, default=500, help='val clips')
    parser.add_argument('--frames', type=int, default=16, help='frames per clip')
    parser.add_argument('--size', type=int, default=64, help='frame side (px, even)')
    parser.add_argument('--item-size', type=int, default=28, help='item side (px)')
    parser.add_argument('--min-travel', type=int, default=16,
                        help='shortest path per axis (px); the longest is size - item-size')
    parser.add_argument('--max-travel', type=int, default=None,
                        help='longest path per axis (px; default size - item-size)')
    parser.add_argument('--distractors', type=int, default=0,
                        help='half-bright items moving in random directions of their own')
    parser.add_argument('--noise', type=float, default=0.0,
                        help='sd of Gaussian pixel noise per frame (gray levels)')
    parser.add_argument('--fps', type=int, default=8, help='frame rate stored in the files')
    return add_generator_flags(parser)


def main(argv=None) -> dict:
    return generator_tool(build_parser(), argv, PARAMS, check_video_params, generate_video)


if __name__ == '__main__':
    main()
