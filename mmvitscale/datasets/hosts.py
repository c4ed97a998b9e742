"""Host datasets that name the file they fail on (``type='mmvitscale.CocoDataset'`` /
``'mmvitscale.VideoDataset'`` in a config, found through :data:`mmvitscale.registry.DATASETS`).

They are mmdet's ``CocoDataset`` and mmaction2's ``VideoDataset`` unchanged, except that

* an annotation file that is not valid COCO json raises :class:`DatasetError` naming it
  (pycocotools' own error is a bare ``JSONDecodeError: Expecting value: line 1 column 1``);
* any error while loading one item (a corrupt PNG or mp4 the decoder refuses, ...) raises
  :class:`DatasetError` naming that item's file, with the original error chained;
* in a dataset made by ``tools/data/`` (a ``manifest.json`` beside the annotation file), the
  annotation file and each item's file are checked against their recorded sha256 as they are
  read (:class:`~mmvitscale.datasets.generators.ManifestCheck`): a same-size corrupted clip
  decodes to wrong frames without an error, so the hash is what catches it.

Each class exists only when its host package is installed.
"""
import copy
from typing import Any, Optional

from ..registry import DATASETS
from .generators import DatasetError, ManifestCheck

PATH_KEYS = ('img_path', 'filename', 'frame_dir')  # mmdet, mmaction2 video, raw frames


class NamesFailingFile:
    """Mixin for an mmengine ``BaseDataset``: errors of one item name the item's file."""

    def item_path(self, idx: int) -> Optional[str]:
        try:
            info = self.get_data_info(idx)
        except Exception:  # noqa: BLE001 - the path is only for the message
            return None
        return next((str(info[k]) for k in PATH_KEYS if info.get(k)), None)

    def manifest_check(self) -> Optional[ManifestCheck]:
        """The hashes of the generated dataset holding ``ann_file`` (looked up once), and
        the annotation file checked against them."""
        if not hasattr(self, '_manifest_check'):
            check = ManifestCheck.find(self.ann_file) if self.ann_file else None
            if check is not None:
                check.check_file(self.ann_file)
            self._manifest_check = check
        return self._manifest_check

    def prepare_data(self, idx: int) -> Any:
        check = self.manifest_check()
        path = self.item_path(idx) if check is not None else None
        if path is not None:
            check.check_file(path)  # DatasetError naming the file, before decoding it
        try:
            return super().prepare_data(idx)
        except Exception as err:
            path = self.item_path(idx)
            where = path if path is not None else f'item {idx} of {self.ann_file}'
            raise DatasetError(f'{where}: loading failed in the data pipeline '
                               f'({type(err).__name__}: {err})') from err


try:
    from mmdet.datasets import CocoDataset as _CocoDataset
except ImportError:  # pragma: no cover - mmdet not installed
    _CocoDataset = None

if _CocoDataset is not None:

    @DATASETS.register_module(name='CocoDataset')
    class CocoDataset(NamesFailingFile, _CocoDataset):
        """mmdet's ``CocoDataset``; a broken annotation file or image is named."""

        def load_data_list(self) -> list:
            self.manifest_check()  # a modified annotation file is refused before any image
            try:
                return super().load_data_list()
            except (ValueError, KeyError, TypeError, AssertionError) as err:
                raise DatasetError(f'{self.ann_file}: not a readable COCO annotation file '
                                   f'({type(err).__name__}: {err})') from err

try:
    from mmaction.datasets import VideoDataset as _VideoDataset
except ImportError:  # pragma: no cover - mmaction2 not installed
    _VideoDataset = None

if _VideoDataset is not None:

    @DATASETS.register_module(name='VideoDataset')
    class VideoDataset(NamesFailingFile, _VideoDataset):
        """mmaction2's ``VideoDataset``; a clip that fails to decode is named.

        ``cache_items=True`` keeps each item's pipeline output after its first read and
        returns a copy of it afterwards (no decoding from the second epoch on). Only for a
        deterministic pipeline (e.g. the offline study's: frames sampled over the whole clip,
        no random augmentation): a random transform would be frozen at its first draw.
        """

        def __init__(self, *args: Any, cache_items: bool = False, **kwargs: Any) -> None:
            self.cache_items = bool(cache_items)
            self._items: dict = {}
            super().__init__(*args, **kwargs)

        def prepare_data(self, idx: int) -> Any:
            if not self.cache_items:
                return super().prepare_data(idx)
            if idx not in self._items:
                self._items[idx] = super().prepare_data(idx)
            return copy.deepcopy(self._items[idx])

        def load_data_list(self) -> list:
            self.manifest_check()  # a modified list file is refused before any clip is read
            try:
                return super().load_data_list()
            except (ValueError, IndexError) as err:
                raise DatasetError(f'{self.ann_file}: not a readable video list '
                                   f'({type(err).__name__}: {err})') from err
