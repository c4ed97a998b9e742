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
from mmvitscale.datasets.generators import cli_flag, run_cli
from mmvitscale.datasets.video import check_video_params, generate_video

PARAMS = ('num_train', 'num_val', 'frames', 'size', 'item_size', 'min_travel', 'fps', 'seed',
          'max_travel', 'distractors', 'noise')


def parse_args(argv=None) -> argparse.Namespace:
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
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--source', default=None, help='folder with the Fashion-MNIST idx files')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    args = parser.parse_args(argv)
    try:
        check_video_params({k: getattr(args, k) for k in PARAMS}, flag=cli_flag)
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    return run_cli(args.out, lambda: generate_video(
        args.out, **{k: getattr(args, k) for k in PARAMS}, overwrite=args.overwrite,
        source=args.source, show_progress=not args.no_progress))


if __name__ == '__main__':
    main()
