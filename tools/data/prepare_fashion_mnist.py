"""Lay out Fashion-MNIST for mmpretrain's ``FashionMNIST`` dataset, offline.

    python tools/data/prepare_fashion_mnist.py [--out data/fashion_mnist] [--source DIR]

Writes the four decompressed idx files mmpretrain reads under ``data_root`` (checked against
the official md5s) plus ``manifest.json``. Source: ``--source``, else ``$MMVITSCALE_FASHION_MNIST``,
else ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``). Use it as
``dict(type='FashionMNIST', data_root=OUT, test_mode=False, download=False)`` (train) or
``test_mode=True`` (test): mmpretrain picks the files by ``test_mode``, not by ``split``.
"""
import argparse

import mmvitscale  # noqa: F401  (stack shims first)
from mmvitscale.datasets import prepare_classification
from mmvitscale.datasets.generators import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/fashion_mnist', help='output folder (data_root)')
    parser.add_argument('--source', default=None, help='folder with the (gzipped) idx files')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    return run_cli(args.out, lambda: prepare_classification(
        args.out, source=args.source, overwrite=args.overwrite))


if __name__ == '__main__':
    main()
