"""COCO-format detection dataset composed from Fashion-MNIST items.

Each image is a black ``canvas`` x ``canvas`` grayscale PNG holding ``min_objects`` ..
``max_objects`` items, each resized to a random square side in ``[min_size, max_size]`` and pasted
so that no two pasted squares overlap. The box of an item is the tight box of its nonzero pixels
after resizing, so the boxes are exact for the written (lossless) images. Train images use
Fashion-MNIST train items, val images test items. Layout (mmdet ``CocoDataset`` with
``data_prefix=dict(img='train/')`` and ``ann_file='annotations/instances_train.json'``)::

    OUT/train/000000.png ...   OUT/val/000000.png ...
    OUT/annotations/instances_train.json   OUT/annotations/instances_val.json
    OUT/manifest.json
"""
import json
import os
import os.path as osp
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np

from . import fashion_mnist as fm
from .generators import DatasetError, check_positive, dump_json, generate, progress, write_bytes

DET_KIND = 'fashion-mnist-det'
SPLITS = (('train', 'train'), ('val', 'test'))  # (our split, Fashion-MNIST split)
MIN_ITEM_SIZE = 8
_PLACE_TRIES = 100


def ann_file(split: str) -> str:
    """Annotation path of ``split`` relative to the dataset root."""
    return f'annotations/instances_{split}.json'


def categories() -> List[Dict[str, Any]]:
    """COCO categories: ids 1..10 in Fashion-MNIST label order."""
    return [dict(id=i + 1, name=name, supercategory='fashion') for i, name in enumerate(fm.CLASSES)]


def check_det_params(params: Dict[str, Any], flag: Callable[[str], str] = str) -> None:
    """Raise ValueError naming (through ``flag``) the first bad parameter."""
    check_positive(params, ('num_train', 'num_val', 'canvas', 'min_objects', 'max_objects',
                            'min_size', 'max_size'), flag)
    p = params
    if isinstance(p['seed'], bool) or not isinstance(p['seed'], int) or p['seed'] < 0:
        raise ValueError(f"{flag('seed')} must be a non-negative integer, got {p['seed']!r}")
    if p['min_size'] < MIN_ITEM_SIZE:
        raise ValueError(f"{flag('min_size')} must be at least {MIN_ITEM_SIZE} px, got "
                         f"{p['min_size']}")
    if p['max_size'] < p['min_size']:
        raise ValueError(f"{flag('max_size')} {p['max_size']} is smaller than "
                         f"{flag('min_size')} {p['min_size']}")
    if p['max_objects'] < p['min_objects']:
        raise ValueError(f"{flag('max_objects')} {p['max_objects']} is smaller than "
                         f"{flag('min_objects')} {p['min_objects']}")
    if p['canvas'] < p['max_size']:
        raise ValueError(f"{flag('canvas')} {p['canvas']} is smaller than the item size "
                         f"{flag('max_size')} {p['max_size']}")
    if (p['canvas'] // p['max_size']) ** 2 < p['min_objects']:
        raise ValueError(f"{flag('min_objects')} {p['min_objects']} items of up to "
                         f"{flag('max_size')} {p['max_size']} px do not surely fit on a "
                         f"{flag('canvas')} {p['canvas']} canvas without overlap")


def _resize(item: np.ndarray, size: int) -> np.ndarray:
    if size == item.shape[0]:
        return item
    interp = cv2.INTER_LINEAR if size > item.shape[0] else cv2.INTER_AREA
    return cv2.resize(item, (size, size), interpolation=interp)


def _place(rng: np.random.Generator, sizes: List[int], canvas: int) -> Optional[List[tuple]]:
    """Non-overlapping (x, y, size) squares by rejection sampling, or None if they did not fit."""
    placed: List[tuple] = []
    for size in sizes:
        for _ in range(_PLACE_TRIES):
            x, y = (int(v) for v in rng.integers(0, canvas - size + 1, size=2))
            if all(x + size <= px or px + ps <= x or y + size <= py or py + ps <= y
                   for px, py, ps in placed):
                placed.append((x, y, size))
                break
        else:
            return None
    return placed


def _place_on_grid(rng: np.random.Generator, n: int, p: Dict[str, Any]) -> List[tuple]:
    """``n`` squares in distinct cells of side >= ``max_size``, randomly offset in their cell."""
    cells = p['canvas'] // p['max_size']
    cell = p['canvas'] // cells
    placed = []
    for index in rng.permutation(cells * cells)[:n]:
        size = int(rng.integers(p['min_size'], p['max_size'] + 1))
        x, y = (int(v) * cell + int(rng.integers(0, cell - size + 1)) for v in divmod(index, cells))
        placed.append((x, y, size))
    return placed


def render_image(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray,
                 p: Dict[str, Any]) -> tuple:
    """One canvas and its objects ``[(label, [x, y, w, h])]`` drawn with ``rng``."""
    canvas = p['canvas']
    for _ in range(_PLACE_TRIES):
        n = int(rng.integers(p['min_objects'], p['max_objects'] + 1))
        sizes = [int(s) for s in rng.integers(p['min_size'], p['max_size'] + 1, size=n)]
        placed = _place(rng, sizes, canvas)
        if placed is not None:
            break
    else:  # crowded settings: one item per grid cell (check_det_params ensures enough cells)
        placed = _place_on_grid(rng, p['min_objects'], p)
    img = np.zeros((canvas, canvas), np.uint8)
    objects = []
    for x, y, size in placed:
        while True:  # an item with no pixel left after resizing has no box: draw another
            idx = int(rng.integers(0, len(images)))
            patch = _resize(images[idx], size)
            ys, xs = np.nonzero(patch)
            if len(xs):
                break
        img[y:y + size, x:x + size] = patch
        x0, y0 = int(xs.min()), int(ys.min())
        box = [x + x0, y + y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        objects.append((int(labels[idx]), box))
    return img, objects


def _build_split(root: str, split: str, fm_split: str, index: int, count: int,
                 p: Dict[str, Any], source: Optional[str], show: bool) -> None:
    images, labels = fm.load_split(fm_split, source)
    rng = np.random.default_rng(np.random.SeedSequence([p['seed'], index]))
    os.makedirs(osp.join(root, split))
    coco_images, annotations = [], []
    for i in progress(range(count), count, f'det {split}', show):
        img, objects = render_image(rng, images, labels, p)
        name = f'{i:06d}.png'
        ok, png = cv2.imencode('.png', img)
        if not ok:
            raise DatasetError(f'could not encode {split}/{name}')
        write_bytes(osp.join(root, split, name), png.tobytes())
        coco_images.append(dict(id=i + 1, file_name=name, width=p['canvas'], height=p['canvas']))
        for label, box in objects:
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1,
                                    category_id=label + 1, bbox=box, area=box[2] * box[3],
                                    iscrowd=0))
    coco = dict(info=dict(description=f'Fashion-MNIST detection ({split}), mmvitscale',
                          version=str(1), seed=p['seed']),
                licenses=[], images=coco_images, annotations=annotations,
                categories=categories())
    write_bytes(osp.join(root, ann_file(split)), dump_json(coco))


def _load(root: str, split: str) -> dict:
    path = osp.join(root, ann_file(split))
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f'{path}: cannot be read ({e})') from e


def _list_data(root: str) -> Dict[str, List[str]]:
    return {split: [f"{split}/{im['file_name']}" for im in _load(root, split)['images']]
            for split, _ in SPLITS}


def validate_det(root: str, p: Dict[str, Any]) -> Dict[str, Any]:
    """Check a written dataset (counts, ids, files, boxes inside images); return its counts."""
    counts = {}
    for split, _ in SPLITS:
        coco = _load(root, split)
        where = f'{root}/{ann_file(split)}'
        if coco['categories'] != categories():
            raise DatasetError(f'{where}: unexpected categories')
        images = {im['id']: im for im in coco['images']}
        if len(images) != len(coco['images']) or len(images) != p[f'num_{split}']:
            raise DatasetError(f"{where}: {len(coco['images'])} images ({len(images)} unique "
                               f"ids), expected {p[f'num_{split}']}")
        for im in images.values():
            if not osp.isfile(osp.join(root, split, im['file_name'])):
                raise DatasetError(f"{where}: image {split}/{im['file_name']} is missing")
        per_image = dict.fromkeys(images, 0)
        ann_ids = set()
        for ann in coco['annotations']:
            im = images.get(ann['image_id'])
            x, y, w, h = ann['bbox']
            if (im is None or ann['id'] in ann_ids or not 1 <= ann['category_id'] <= 10
                    or ann['iscrowd'] != 0 or w < 1 or h < 1 or x < 0 or y < 0
                    or x + w > im['width'] or y + h > im['height'] or ann['area'] != w * h):
                raise DatasetError(f'{where}: invalid annotation {ann}')
            ann_ids.add(ann['id'])
            per_image[ann['image_id']] += 1
        bad = [i for i, n in per_image.items()
               if not p['min_objects'] <= n <= p['max_objects']]
        if bad:
            raise DatasetError(f'{where}: image id {bad[0]} has {per_image[bad[0]]} objects')
        counts[split] = dict(images=len(images), annotations=len(coco['annotations']))
    return counts


def generate_det(out_dir: str, num_train: int = 2000, num_val: int = 500, canvas: int = 128,
                 min_objects: int = 1, max_objects: int = 4, min_size: int = 28,
                 max_size: int = 56, seed: int = 0, overwrite: bool = False,
                 source: Optional[str] = None, show_progress: bool = True) -> dict:
    """Generate (or verify and keep) the detection dataset at ``out_dir``; return its manifest."""
    p = dict(num_train=num_train, num_val=num_val, canvas=canvas, min_objects=min_objects,
             max_objects=max_objects, min_size=min_size, max_size=max_size, seed=seed)
    check_det_params(p)

    def build(tmp: str) -> None:
        for index, (split, fm_split) in enumerate(SPLITS):
            _build_split(tmp, split, fm_split, index, p[f'num_{split}'], p, source,
                         show_progress)

    return generate(out_dir, DET_KIND, p, overwrite, build, _list_data,
                    lambda root: validate_det(root, p), [ann_file(s) for s, _ in SPLITS])
