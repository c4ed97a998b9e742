"""Offline reader for the Fashion-MNIST idx files (e.g. Debian's ``dataset-fashion-mnist``).

The source folder is, in order: the ``root`` argument, ``$MMVITSCALE_FASHION_MNIST``, then
``/usr/share/datasets/fashion-mnist``. Files may be gzipped (``*.gz``) or plain. Their decompressed
content is checked against the md5s of the official release, so every derived dataset is the
same on every machine.
"""
import functools
import gzip
import hashlib
import os
import os.path as osp
from typing import Dict, Optional, Tuple

import numpy as np

ENV_VAR = 'MMVITSCALE_FASHION_MNIST'
DEFAULT_DIR = '/usr/share/datasets/fashion-mnist'
CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
           'Bag', 'Ankle boot')  # same names and order as mmpretrain's FashionMNIST
SPLITS: Dict[str, Tuple[str, str]] = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
SPLIT_SIZES = {'train': 60000, 'test': 10000}
# md5 of the *decompressed* official files. (mmpretrain / torchvision list md5s of the upstream
# .gz archives; Debian re-gzipped them, so only the decompressed content can be compared.)
RAW_MD5 = {
    'train-images-idx3-ubyte': 'f4a8712d7a061bf5bd6d2ca38dc4d50a',
    'train-labels-idx1-ubyte': '9018921c3c673c538a1fc5bad174d6f9',
    't10k-images-idx3-ubyte': '8181f5470baa50b63fa0f6fddb340f0a',
    't10k-labels-idx1-ubyte': '15d484375f8d13e6eb1aabb0c3f46965',
}


class FashionMNISTNotFoundError(FileNotFoundError):
    """The Fashion-MNIST source files are not where they were looked for."""


def source_dir(root: Optional[str] = None) -> str:
    """Folder holding the four idx files; raises :class:`FashionMNISTNotFoundError` if any lacks."""
    where = root or os.environ.get(ENV_VAR) or DEFAULT_DIR
    missing = [name for name in RAW_MD5 if find_file(where, name) is None]
    if missing:
        how = 'given as `root`' if root else (
            f'from ${ENV_VAR}' if os.environ.get(ENV_VAR) else 'the default location')
        raise FashionMNISTNotFoundError(
            f'Fashion-MNIST not found in {where!r} ({how}); missing: {", ".join(missing)} '
            '(plain or .gz). Install it with `apt-get install dataset-fashion-mnist` or set '
            f'{ENV_VAR} to a folder holding the idx files.')
    return where


def find_file(root: str, name: str) -> Optional[str]:
    """Path of ``name`` or ``name.gz`` under ``root``, or None."""
    for candidate in (osp.join(root, name), osp.join(root, name + '.gz')):
        if osp.isfile(candidate):
            return candidate
    return None


def read_raw(path: str) -> bytes:
    """Bytes of an idx file, decompressed when gzipped (detected by magic, not by name)."""
    with open(path, 'rb') as f:
        data = f.read()
    return gzip.decompress(data) if data[:2] == b'\x1f\x8b' else data


def parse_idx(data: bytes, path: str = '<bytes>') -> np.ndarray:
    """Parse an unsigned-byte idx (SN3) array; raises ValueError on a malformed file."""
    if len(data) < 4 or data[:2] != b'\x00\x00' or data[2] != 0x08:
        raise ValueError(f'{path}: not a uint8 idx file (header {data[:4].hex()})')
    ndim = data[3]
    offset = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    expected = offset + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f'{path}: header says shape {shape} ({expected} bytes) but the file has '
                         f'{len(data)} bytes (truncated or corrupt)')
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


@functools.lru_cache(maxsize=4)
def _load(root: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name in SPLITS[split]:
        path = find_file(root, name)
        data = read_raw(path)
        md5 = hashlib.md5(data).hexdigest()
        if md5 != RAW_MD5[name]:
            raise ValueError(f'{path}: decompressed md5 {md5} is not that of the official '
                             f'Fashion-MNIST file ({RAW_MD5[name]})')
        arrays.append(parse_idx(data, path))
    images, labels = arrays
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_split(split: str, root: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels uint8 [N])`` of split ``'train'`` or ``'test'``.

    Arrays are read-only and cached per (folder, split).
    """
    if split not in SPLITS:
        raise ValueError(f'split must be one of {sorted(SPLITS)}, got {split!r}')
    return _load(osp.abspath(source_dir(root)), split)
