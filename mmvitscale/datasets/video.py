"""Motion-direction video dataset: a Fashion-MNIST item slides across a black canvas.

The label is the direction of travel (8 classes, :data:`DIRECTIONS`), never the item's
appearance. Clips come in pairs that share item, path and speed but run in opposite directions
(label ``k`` and ``(k + 4) % 8``): the second clip's frames are the first clip's in reverse order.
Any model that ignores frame order - averaging frames, or averaging per-frame features or
scores, as TSN-style consensus does - sees the same input for both clips of a pair, so it can tell
the axis of motion but not its sign: it is capped at 50 % accuracy, while a model of temporal order
can reach 100 %. Harder variants (all off by default, which leaves the files as they were):
``max_travel`` caps the path (subtler motion), ``distractors`` adds items at half brightness
that move in random directions of their own (the label is the bright item's), ``noise`` adds
Gaussian pixel noise (sd in gray levels) to every frame. Written as ``mp4v`` MPEG-4 files
(lossy, so decoded frame averages of a pair are nearly, not exactly, equal). Layout for
mmaction2's ``VideoDataset`` (``ann_file='OUT/train_list_videos.txt'``,
``data_prefix=dict(video='OUT/videos_train')``)::

    OUT/videos_train/000000.mp4 ...   OUT/videos_val/000000.mp4 ...
    OUT/train_list_videos.txt   OUT/val_list_videos.txt   (lines ``000000.mp4 LABEL``)
    OUT/classes.txt   OUT/manifest.json
"""
import os
import os.path as osp
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from . import fashion_mnist as fm
from .generators import DatasetError, check_positive, generate, progress, write_bytes

VIDEO_KIND = 'fashion-mnist-motion'
DIRECTIONS = ('right', 'up-right', 'up', 'up-left', 'left', 'down-left', 'down', 'down-right')
# (dx, dy) per label in image coordinates (y grows downwards); label k + 4 is -(label k).
STEPS = ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1))
SPLITS = (('train', 'train'), ('val', 'test'))
MIN_ITEM_SIZE = 8


def ann_file(split: str) -> str:
    """Annotation list of ``split`` relative to the dataset root."""
    return f'{split}_list_videos.txt'


def video_dir(split: str) -> str:
    """Video folder of ``split`` relative to the dataset root."""
    return f'videos_{split}'


def check_video_params(params: Dict[str, Any], flag: Callable[[str], str] = str) -> None:
    """Raise ValueError naming (through ``flag``) the first bad parameter."""
    check_positive(params, ('num_train', 'num_val', 'frames', 'size', 'item_size', 'min_travel',
                            'fps'), flag)
    p = params
    if isinstance(p['seed'], bool) or not isinstance(p['seed'], int) or p['seed'] < 0:
        raise ValueError(f"{flag('seed')} must be a non-negative integer, got {p['seed']!r}")
    if p['frames'] < 2:
        raise ValueError(f"{flag('frames')} must be at least 2 to show motion, got {p['frames']}")
    if p['item_size'] < MIN_ITEM_SIZE:
        raise ValueError(f"{flag('item_size')} must be at least {MIN_ITEM_SIZE} px, got "
                         f"{p['item_size']}")
    if p['size'] % 2:
        raise ValueError(f"{flag('size')} must be even (MPEG-4 frame size), got {p['size']}")
    if p['size'] < p['item_size']:
        raise ValueError(f"{flag('size')} {p['size']} is smaller than the item size "
                         f"{flag('item_size')} {p['item_size']}")
    if p['size'] - p['item_size'] < p['min_travel']:
        raise ValueError(f"{flag('size')} {p['size']} leaves {p['size'] - p['item_size']} px of "
                         f"travel for {flag('item_size')} {p['item_size']}, less than "
                         f"{flag('min_travel')} {p['min_travel']}")
    cap = p.get('max_travel')
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < p['min_travel']:
            raise ValueError(f"{flag('max_travel')} must be an integer >= {flag('min_travel')} "
                             f"{p['min_travel']}, got {cap!r}")
    n = p.get('distractors', 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{flag('distractors')} must be a non-negative integer, got {n!r}")
    noise = p.get('noise', 0.0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 256:
        raise ValueError(f"{flag('noise')} must be a number in [0, 256) (gray levels), "
                         f'got {noise!r}')


def trajectory(axis: int, travel: int, origin: Tuple[int, int], frames: int) -> List[tuple]:
    """Top-left corners, frame by frame, of an item moving ``travel`` px in direction ``axis``
    (a label, 0..7; for ``axis`` < 4 the opposite direction ``axis + 4`` is this list reversed).
    """
    dx, dy = STEPS[axis]
    x0, y0 = origin
    steps = [(2 * travel * t + frames - 1) // (2 * (frames - 1)) for t in range(frames)]  # round
    return [(x0 + dx * s, y0 + dy * s) for s in steps]


def render_clip(item: np.ndarray, corners: List[tuple], size: int) -> np.ndarray:
    """uint8 frames ``[T, size, size]`` with ``item`` pasted at each corner on black."""
    h, w = item.shape
    clip = np.zeros((len(corners), size, size), np.uint8)
    for t, (x, y) in enumerate(corners):
        clip[t, y:y + h, x:x + w] = item
    return clip


def _sample_path(rng: np.random.Generator, images: np.ndarray, p: Dict[str, Any],
                 axis: int) -> Tuple[np.ndarray, List[tuple]]:
    """A random item and the corners of its path in direction ``axis`` inside the canvas."""
    item = images[int(rng.integers(0, len(images)))]
    if item.shape[0] != p['item_size']:
        item = cv2.resize(item, (p['item_size'],) * 2, interpolation=cv2.INTER_AREA
                          if p['item_size'] < item.shape[0] else cv2.INTER_LINEAR)
    room = p['size'] - p['item_size']
    longest = room if p.get('max_travel') is None else min(room, p['max_travel'])
    travel = int(rng.integers(p['min_travel'], longest + 1))
    origin = []
    for step in STEPS[axis]:
        low = travel if step < 0 else 0  # the path must stay inside the canvas
        high = room - travel if step > 0 else room
        origin.append(int(rng.integers(low, high + 1)))
    return item, trajectory(axis, travel, tuple(origin), p['frames'])


def sample_pair(rng: np.random.Generator, images: np.ndarray,
                p: Dict[str, Any]) -> List[Tuple[np.ndarray, int]]:
    """Two ``(clip, label)`` with the same item and path in opposite directions, random order.

    Distractors (half brightness, own random directions) and noise are drawn for the forward
    clip, so the backward clip is still the forward one's frames in reverse order.
    """
    axis = int(rng.integers(0, 4))
    item, corners = _sample_path(rng, images, p, axis)
    forward = render_clip(item, corners, p['size'])
    for _ in range(p.get('distractors', 0)):
        other, path = _sample_path(rng, images, p, int(rng.integers(0, 8)))
        dim = render_clip((other // 2).astype(np.uint8), path, p['size'])
        np.maximum(forward, dim, out=forward)
    if p.get('noise', 0.0):
        noisy = forward + rng.normal(0.0, p['noise'], forward.shape)
        forward = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    pair = [(forward, axis), (forward[::-1].copy(), axis + 4)]
    return pair[::-1] if rng.integers(0, 2) else pair


def write_video(path: str, clip: np.ndarray, fps: int) -> None:
    """Write grayscale frames ``[T, H, W]`` as an ``mp4v`` MPEG-4 file."""
    h, w = clip.shape[1:]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h), True)
    if not writer.isOpened():
        raise DatasetError(f'OpenCV cannot write an mp4v video to {path} (no FFmpeg backend?)')
    try:
        for frame in clip:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()


def _build_split(root: str, split: str, fm_split: str, index: int, p: Dict[str, Any],
                 source: Optional[str], show: bool) -> None:
    images, _ = fm.load_split(fm_split, source)
    rng = np.random.default_rng(np.random.SeedSequence([p['seed'], index]))
    count = p[f'num_{split}']
    os.makedirs(osp.join(root, video_dir(split)))
    lines: List[str] = []
    pending: List[Tuple[np.ndarray, int]] = []
    for i in progress(range(count), count, f'video {split}', show):
        if not pending:
            pending = sample_pair(rng, images, p)
        clip, label = pending.pop(0)
        name = f'{i:06d}.mp4'
        write_video(osp.join(root, video_dir(split), name), clip, p['fps'])
        lines.append(f'{name} {label}\n')
    write_bytes(osp.join(root, ann_file(split)), ''.join(lines).encode())


def _read_list(root: str, split: str) -> List[Tuple[str, int]]:
    path = osp.join(root, ann_file(split))
    try:
        with open(path, encoding='utf-8') as f:
            return [(name, int(label)) for name, label in (line.split() for line in f)]
    except (OSError, ValueError) as e:
        raise DatasetError(f'{path}: cannot be read ({e})') from e


def _list_data(root: str) -> Dict[str, List[str]]:
    return {split: [f'{video_dir(split)}/{name}' for name, _ in _read_list(root, split)]
            for split, _ in SPLITS}


def validate_video(root: str, p: Dict[str, Any]) -> Dict[str, Any]:
    """Check a written dataset (counts, labels, every video's frame count and size)."""
    counts = {}
    for split, _ in SPLITS:
        items = _read_list(root, split)
        if len(items) != p[f'num_{split}']:
            raise DatasetError(f'{root}/{ann_file(split)}: {len(items)} clips, expected '
                               f"{p[f'num_{split}']}")
        for name, label in items:
            path = osp.join(root, video_dir(split), name)
            if not 0 <= label < len(DIRECTIONS):
                raise DatasetError(f'{root}/{ann_file(split)}: label {label} of {name}')
            cap = cv2.VideoCapture(path)
            shape = tuple(int(cap.get(prop)) for prop in (
                cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FRAME_WIDTH))
            cap.release()
            if shape != (p['frames'], p['size'], p['size']):
                raise DatasetError(f'{path}: frames x height x width {shape}, expected '
                                   f"{(p['frames'], p['size'], p['size'])}")
        counts[split] = dict(clips=len(items),
                             per_label=[sum(lab == k for _, lab in items) for k in range(8)])
    return counts


def generate_video(out_dir: str, num_train: int = 2000, num_val: int = 500, frames: int = 16,
                   size: int = 64, item_size: int = 28, min_travel: int = 16, fps: int = 8,
                   seed: int = 0, max_travel: Optional[int] = None, distractors: int = 0,
                   noise: float = 0.0, overwrite: bool = False, source: Optional[str] = None,
                   show_progress: bool = True) -> dict:
    """Generate (or verify and keep) the motion dataset at ``out_dir``; return its manifest.

    ``max_travel`` (px, default: the canvas allows), ``distractors`` and ``noise`` make it
    harder (module docstring); at their defaults the files are those of earlier versions.
    """
    p = dict(num_train=num_train, num_val=num_val, frames=frames, size=size,
             item_size=item_size, min_travel=min_travel, fps=fps, seed=seed)
    for name, value, default in (('max_travel', max_travel, None),
                                 ('distractors', distractors, 0), ('noise', noise, 0.0)):
        if value != default or isinstance(value, bool):  # defaults keep earlier manifests
            p[name] = value
    check_video_params(p)

    def build(tmp: str) -> None:
        write_bytes(osp.join(tmp, 'classes.txt'), ''.join(d + '\n' for d in DIRECTIONS).encode())
        for index, (split, fm_split) in enumerate(SPLITS):
            _build_split(tmp, split, fm_split, index, p, source, show_progress)

    return generate(out_dir, VIDEO_KIND, p, overwrite, build, _list_data,
                    lambda root: validate_video(root, p),
                    ['classes.txt'] + [ann_file(s) for s, _ in SPLITS])
