"""A Runner that checks the dataset is there before building anything."""
import os.path as osp
from typing import Iterable, List

from mmengine.config import Config
from mmengine.runner import Runner

from ..registry import RUNNERS


def missing_data(cfg: Config) -> List[str]:
    """Paths listed in ``cfg.data_check.paths`` that do not exist."""
    check = cfg.get('data_check') or {}
    paths: Iterable[str] = check.get('paths', [])
    return [p for p in paths if not osp.exists(p)]


@RUNNERS.register_module()
class DataCheckedRunner(Runner):
    """mmengine ``Runner`` whose ``from_cfg`` first checks ``cfg.data_check``.

    A config sets ``runner_type='mmvitscale.DataCheckedRunner'`` and
    ``data_check=dict(paths=[...], hint='...')``. When a path is missing the run stops with
    ``SystemExit`` and a message naming the missing paths and the hint (where the data goes,
    how to run the offline variant) before any model, dataset or work dir is created. Host
    train scripts (``mim train mmdet ...``) honour ``runner_type``, so they get the check too.
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> Runner:
        missing = missing_data(cfg)
        if missing:
            hint = (cfg.get('data_check') or {}).get('hint', '')
            lines = ['dataset not found; missing:'] + [f'  {p}' for p in missing]
            if hint:
                lines += ['', hint]
            raise SystemExit('\n'.join(lines))
        return super().from_cfg(cfg)
