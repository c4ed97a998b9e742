"""A Runner that checks the configured dataset is there before building anything; the
launch arguments ``tools/train.py`` and ``tools/test.py`` share."""
import argparse
import os
import os.path as osp
from typing import Any, Iterator, List, Mapping, Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from ..registry import RUNNERS

_SPLITS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def parse_launch_args(parser: argparse.ArgumentParser,
                      argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Add ``--cfg-options``, ``--launcher`` and ``--local_rank`` to a tool's ``parser``, parse
    ``argv`` and set ``LOCAL_RANK`` from ``--local_rank`` when the environment has none."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def apply_launch_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Set ``cfg.launcher`` and ``cfg.work_dir`` from the arguments: ``--work-dir`` if given,
    else the config's own, else ``./work_dirs/<config name>``."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def _datasets(loader: Any) -> Iterator[Mapping]:
    """The dataset config of a dataloader config, through wrappers (``dataset=dict(...)``)."""
    dataset = loader.get('dataset') if isinstance(loader, Mapping) else None
    while isinstance(dataset, Mapping):
        yield dataset
        dataset = dataset.get('dataset')


def _join(root: Any, path: Any) -> Any:
    if not isinstance(path, str) or not path:
        return None
    if isinstance(root, str) and root and not osp.isabs(path) and '://' not in path:
        return osp.join(root, path)
    return path


def dataset_paths(cfg: Config) -> List[str]:
    """Files and folders the configured datasets read, from their *current* settings.

    For each dataloader in ``cfg`` (train / val / test, wrappers followed): ``data_root`` +
    ``ann_file`` and ``data_root`` + each ``data_prefix`` entry; ``data_root`` alone when neither
    is set. Plus ``cfg.data_check.paths`` when a config lists extra ones. Computed after
    ``--cfg-options``, so pointing ``data_root`` elsewhere moves the check with it.
    """
    paths: List[str] = []
    for split in _SPLITS:
        for dataset in _datasets(cfg.get(split)):
            root = dataset.get('data_root')
            found = [_join(root, dataset.get('ann_file'))]
            prefix = dataset.get('data_prefix')
            values = prefix.values() if isinstance(prefix, Mapping) else [prefix]
            found += [_join(root, v) for v in values]
            found = [p for p in found if p]
            if not found and isinstance(root, str) and root:
                found = [root]
            paths += [p for p in found if '://' not in p]
    extra = (cfg.get('data_check') or {}).get('paths', [])
    paths += [p for p in extra if isinstance(p, str)]
    return list(dict.fromkeys(paths))


def data_problems(cfg: Config) -> List[str]:
    """``'<path> (missing)'`` / ``'<path> (empty)'`` for each configured path that cannot hold
    data: absent, an empty folder or a 0-byte file."""
    problems = []
    for path in dataset_paths(cfg):
        if not osp.exists(path):
            problems.append(f'{path} (missing)')
        elif osp.isdir(path) and not any(True for _ in os.scandir(path)):
            problems.append(f'{path} (empty folder)')
        elif osp.isfile(path) and osp.getsize(path) == 0:
            problems.append(f'{path} (empty file)')
    return problems


def missing_data(cfg: Config) -> List[str]:
    """Configured dataset paths that are missing or empty (see :func:`data_problems`)."""
    return data_problems(cfg)


@RUNNERS.register_module()
class DataCheckedRunner(Runner):
    """mmengine ``Runner`` whose ``from_cfg`` first checks the configured dataset.

    A config sets ``runner_type='mmvitscale.DataCheckedRunner'`` and optionally
    ``data_check=dict(hint='...', paths=[extra paths])``. The paths checked are those the
    dataloaders are configured to read when the runner is built (:func:`dataset_paths`), so
    ``--cfg-options train_dataloader.dataset.data_root=...`` moves the check with the data.
    When one is missing or empty the run stops with ``SystemExit`` naming each path and the
    hint (where the data goes, how to run the offline variant) before any model, dataset or
    work dir is created. Host train scripts (``mim train mmdet ...``) honour ``runner_type``.
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> Runner:
        problems = data_problems(cfg)
        if problems:
            hint = (cfg.get('data_check') or {}).get('hint', '')
            lines = ['dataset not found; missing or empty:'] + [f'  {p}' for p in problems]
            if hint:
                lines += ['', hint]
            raise SystemExit('\n'.join(lines))
        return super().from_cfg(cfg)
