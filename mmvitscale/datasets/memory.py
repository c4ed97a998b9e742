"""Fashion-MNIST held in memory as ready tensors: decoded once, resized once, packed per item.

``type='mmvitscale.InMemoryFashionMNIST'`` in a config is mmpretrain's ``FashionMNIST`` (same
files, split, ``indices``, metainfo) whose items are identical to what its pipeline gives
(``inputs`` uint8 ``[C, H, W]``, a ``DataSample`` with ``gt_label`` and the pipeline's
metainfo), computed once for the whole (sub)set instead of per item and epoch:

* a pipeline of mmcv ``Resize`` transforms followed by one ``PackInputs`` runs on stacks of up
  to 512 images at a time (the images as channels of one array: the same cv2 call per image);
* items then cost an index and a ``DataSample``; with ``collate_fn=dict(type='default_collate')``
  a batch is one stacked tensor, which the classifier's data preprocessor takes as is.

Any other pipeline (random augmentation, other transforms) runs per item as in the parent.
"""
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..registry import DATASETS

try:
    from mmpretrain.datasets import FashionMNIST as _FashionMNIST
except ImportError:  # pragma: no cover - mmpretrain not installed
    _FashionMNIST = None

CHUNK = 512  # cv2 takes at most 512 channels


def _batchable(transforms: List[Any]) -> Optional[Tuple[List[Any], Any]]:
    """``(resizes, pack)`` when ``transforms`` is mmcv Resize ... then PackInputs, else None."""
    from mmcv.transforms import Resize
    from mmpretrain.datasets.transforms import PackInputs
    if not transforms or type(transforms[-1]) is not PackInputs:
        return None
    pack = transforms[-1]
    if pack.input_key != 'img' or tuple(pack.algorithm_keys):
        return None
    resizes = list(transforms[:-1])
    if any(type(t) is not Resize for t in resizes):
        return None
    return resizes, pack


def _immutable(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_immutable(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, np.number))


def resize_stack(images: np.ndarray, resizes: List[Any]) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Apply mmcv ``Resize`` transforms to ``images`` ``[N, H, W]`` (uint8), 512 at a time.

    Returns the resized ``[N, H', W']`` array and the keys the transforms add to an item's
    results (``img_shape``, ``scale_factor``, ...), which are the same for every item since all
    items have one size.
    """
    if images.ndim != 3:
        raise ValueError(f'images must be [N, H, W], got shape {images.shape}')
    if not resizes:
        return images, {}
    out: List[np.ndarray] = []
    extra: Dict[str, Any] = {}
    for start in range(0, len(images), CHUNK):
        chunk = np.ascontiguousarray(images[start:start + CHUNK].transpose(1, 2, 0))
        results: Dict[str, Any] = dict(img=chunk)
        for t in resizes:
            results = t.transform(results)
        img = results.pop('img')
        if img.ndim == 2:  # a chunk of one image loses its channel axis in cv2
            img = img[:, :, None]
        out.append(img.transpose(2, 0, 1))
        extra = results
    return np.ascontiguousarray(np.concatenate(out)), extra


if _FashionMNIST is not None:
    import torch
    from mmpretrain.structures import DataSample

    @DATASETS.register_module(name='InMemoryFashionMNIST')
    class InMemoryFashionMNIST(_FashionMNIST):
        """mmpretrain's ``FashionMNIST`` with its items computed once and kept as tensors.

        Arguments are those of ``FashionMNIST``; ``serialize_data`` defaults to False (items
        are not pickled). ``cached`` says whether the pipeline was precomputed.
        """

        def __init__(self, *args: Any, serialize_data: bool = False, **kwargs: Any) -> None:
            self.cached = False
            super().__init__(*args, serialize_data=serialize_data, **kwargs)

        def load_data_list(self) -> List[dict]:
            """The parent's list (same arrays, labels as 0-d int64 arrays), built vectorised.

            Files are read with mmpretrain's own reader; a missing file (or ``download``)
            goes through the parent, which raises or downloads.
            """
            from mmengine.fileio import join_path
            from mmpretrain.datasets.mnist import read_image_file, read_label_file
            from mmpretrain.datasets.utils import rm_suffix
            root = self.data_prefix['root']
            if self.download or not self._check_exists():
                return super().load_data_list()
            files = self.test_list if self.test_mode else self.train_list
            imgs = read_image_file(join_path(root, rm_suffix(files[0][0]))).numpy()
            labels = read_label_file(join_path(root, rm_suffix(files[1][0]))).numpy()
            return [dict(img=img, gt_label=np.asarray(label))
                    for img, label in zip(imgs, labels)]

        def full_init(self) -> None:
            if self._fully_initialized:
                return
            super().full_init()
            self._precompute()

        def _precompute(self) -> None:
            found = _batchable(list(self.pipeline.transforms))
            if found is None or len(self) == 0:
                return
            resizes, pack = found
            infos = self.data_list if not self.serialize_data else [
                self.get_data_info(i) for i in range(len(self))]
            images = np.stack([info['img'] for info in infos])
            if images.dtype != np.uint8 or images.ndim != 3:
                return
            resized, extra = resize_stack(images, resizes)
            self._inputs = torch.from_numpy(resized).unsqueeze(1)  # [N, 1, H, W]
            self._labels = torch.as_tensor(
                np.array([int(info['gt_label']) for info in infos], dtype=np.int64))
            meta = {k: extra[k] for k in pack.meta_keys if k in extra}
            if not all(_immutable(v) for v in meta.values()):
                return  # shared metainfo must not be mutable: the parent's per-item path
            if 'sample_idx' in pack.meta_keys:
                meta['sample_idx'] = 0
            self._proto = DataSample(metainfo=meta)
            self._proto.set_gt_label(self._labels[:1].clone())
            self._with_idx = 'sample_idx' in pack.meta_keys
            self.cached = True

        def _sample(self, idx: int) -> Any:
            """A ``DataSample`` equal to ``DataSample(metainfo=meta).set_gt_label(label)``.

            Built from a prototype's fields (immutable metainfo values: shapes and scale
            factors as tuples, the index) with the item's own field sets and label, skipping
            the per-item deepcopy of the metainfo that made up most of a batch's loading time.
            """
            proto = self._proto
            sample = DataSample.__new__(DataSample)
            fields = sample.__dict__
            fields.update(proto.__dict__)
            fields['_metainfo_fields'] = set(proto._metainfo_fields)
            fields['_data_fields'] = set(proto._data_fields)
            fields['gt_label'] = self._labels[idx:idx + 1].clone()
            if self._with_idx:
                fields['sample_idx'] = idx
            return sample

        def prepare_data(self, idx: int) -> Any:
            if not self.cached:
                return super().prepare_data(idx)
            return dict(inputs=self._inputs[idx], data_samples=self._sample(idx))
else:  # pragma: no cover
    InMemoryFashionMNIST = None
