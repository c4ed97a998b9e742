"""Registry of study tasks: which config, which data, which metric, how to size a trial.

A task config is loaded under a scaling rule (:func:`mmvitscale.engine.config.load_with_rule`), then
:func:`configure` points it at a data subset, a schedule, a seed and a quiet work folder.
Offline tasks (Fashion-MNIST and its generated detection / video sets) prepare their own data;
the real-data configs are registered by path and train on the data their config names.
"""
import json
import os.path as osp
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from mmengine.config import Config

from ..fileio import atomic_write

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCALING_DIR = osp.join(ROOT, 'configs', '_base_', 'scaling')


class TaskError(ValueError):
    """A task name, size or data folder that cannot give a trial."""


@dataclass(frozen=True)
class TaskSpec:
    """One task: its config, data, metric and default trial size.

    ``config`` is relative to the repository root or absolute; ``data_dir`` is the folder
    under the study's data root that an offline task trains on (``None``: the config's data).
    ``metric_scale`` turns the evaluator's value into the reported unit (percent points).
    ``data_params`` are the generator's arguments an offline det / video task needs (a harder
    variant); data found in ``data_dir`` that was made otherwise is refused.
    """

    name: str
    config: str
    kind: str  # 'cls', 'det' or 'video': how data subsets are set
    metric: str
    metric_scale: float
    metric_label: str
    unit: str  # what one training sample is
    chance: Optional[float] = None
    data_dir: Optional[str] = None
    defaults: Mapping[str, Optional[int]] = field(default_factory=dict)
    data_params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def offline(self) -> bool:
        return self.data_dir is not None

    @property
    def config_path(self) -> str:
        return self.config if osp.isabs(self.config) else osp.join(ROOT, self.config)


TASKS: Dict[str, TaskSpec] = {}
SIZE_KEYS = ('epochs', 'train', 'val', 'batch')


def register_task(spec: TaskSpec, overwrite: bool = False) -> TaskSpec:
    """Add a task to the registry (``overwrite`` to replace one of the same name)."""
    if spec.kind not in ('cls', 'det', 'video'):
        raise TaskError(f"task {spec.name}: kind must be 'cls', 'det' or 'video', "
                        f'got {spec.kind!r}')
    if spec.name in TASKS and not overwrite:
        raise TaskError(f'task {spec.name!r} is already registered')
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; the error lists the registered names."""
    if name not in TASKS:
        raise TaskError(f'unknown task {name!r}; registered: {", ".join(sorted(TASKS))}')
    return TASKS[name]


def _offline(epochs: int, train: int, val: int, batch: Optional[int]) -> Dict[str, Any]:
    return dict(epochs=epochs, train=train, val=val, batch=batch)


for _spec in (
        TaskSpec('cls', 'configs/cls/scaled_vit-p7_fmnist.py', 'cls', 'accuracy/top1', 1.0,
                 'top-1 %', 'images', 10.0, 'fashion_mnist', _offline(2, 60000, 10000, 128)),
        TaskSpec('cls_pit', 'configs/cls/scaled_pit-p4_fmnist.py', 'cls', 'accuracy/top1', 1.0,
                 'top-1 %', 'images', 10.0, 'fashion_mnist', _offline(1, 40000, 10000, 128)),
        # sized for the 20-minute default study (learning curves: docs/results/transfer.md)
        TaskSpec('det', 'configs/det/scaled_vit_retina_fmnist.py', 'det', 'coco/bbox_mAP',
                 100.0, 'bbox mAP x100', 'canvases', None, 'fmnist_det',
                 _offline(5, 500, 200, 8)),
        # two half-bright distractors and pixel noise: not saturated
        TaskSpec('video', 'configs/video/scaled_vit_fmnist_video.py', 'video', 'acc/top1',
                 100.0, 'top-1 %', 'clips', 12.5, 'fmnist_video_hard',
                 _offline(6, 1000, 500, 8), data_params=dict(distractors=2, noise=24.0)),
        # real data: trained on what the config names (DataCheckedRunner says what is missing)
        TaskSpec('in1k', 'configs/cls/scaled-vit-tiny_4xb256_in1k.py', 'cls', 'accuracy/top1',
                 1.0, 'top-1 %', 'images', 0.1),
        # PiT-Ti on ImageNet-1k, the same recipe: the paper's PiT target at the DeiT-Ti budget
        TaskSpec('in1k_pit', 'configs/cls/scaled-pit-ti_4xb256_in1k.py', 'cls', 'accuracy/top1',
                 1.0, 'top-1 %', 'images', 0.1),
        TaskSpec('coco', 'configs/det/scaled_vit_retina.py', 'det', 'coco/bbox_mAP', 100.0,
                 'bbox mAP x100', 'images'),
        TaskSpec('k400', 'configs/video/scaled_vit_timesformer_k400.py', 'video', 'acc/top1',
                 100.0, 'top-1 %', 'clips', 0.25)):
    register_task(_spec)


def trial_size(spec: TaskSpec, **overrides: Optional[int]) -> Dict[str, Optional[int]]:
    """Epochs / train / val / batch of a trial: the task's defaults, then ``overrides``.

    ``None`` keeps the config's value (real-data tasks: whole splits, the config's schedule).
    Raises :class:`TaskError` naming the setting for a value < 1.
    """
    size = {k: spec.defaults.get(k) for k in SIZE_KEYS}
    size.update({k: v for k, v in overrides.items() if v is not None})
    for key in SIZE_KEYS:
        if size[key] is not None and (not isinstance(size[key], int) or size[key] < 1):
            raise TaskError(f'{spec.name} {key} must be an integer >= 1, got {size[key]!r}')
    return size


# ---------------------------------------------------------------------------- data
def data_dir(spec: TaskSpec, data_root: str) -> str:
    return osp.join(data_root, spec.data_dir or '')


def ensure_data(spec: TaskSpec, data_root: str, size: Mapping[str, Any]) -> Dict[str, int]:
    """Generate an offline task's data when missing (else verify it); return split sizes.

    A real-data task returns ``{}`` (its runner checks the config's paths).
    """
    from mmvitscale import datasets
    if not spec.offline:
        return {}
    out = data_dir(spec, data_root)
    manifest_path = osp.join(out, datasets.MANIFEST)
    params: Dict[str, Any] = {}
    if osp.isfile(manifest_path):  # keep whatever valid dataset is there (verified below)
        with open(manifest_path, encoding='utf-8') as f:
            params = json.load(f).get('params', {})
    made = {k: params.get(k) for k in spec.data_params}
    if params and made != dict(spec.data_params):
        raise TaskError(f'{spec.name} data at {out} was made with {made}, the task needs '
                        f'{dict(spec.data_params)}: remove that folder (it is made again) or '
                        'pass another --data-root')
    try:
        if spec.kind == 'cls':
            manifest = datasets.prepare_classification(out)
            counts = dict(train=manifest['counts']['train'], val=manifest['counts']['test'])
        else:
            gen = datasets.generate_det if spec.kind == 'det' else datasets.generate_video
            if not params:
                params = dict(spec.data_params, num_train=max(2000, size['train'] or 0),
                              num_val=max(500, size['val'] or 0))
            manifest = gen(out, **params, show_progress=False)
            key = 'images' if spec.kind == 'det' else 'clips'
            counts = {s: manifest['counts'][s][key] for s in ('train', 'val')}
    except (datasets.DatasetError, datasets.FashionMNISTNotFoundError, ValueError) as err:
        raise TaskError(f'{spec.name} data at {out}: {err}') from err
    for split in ('train', 'val'):
        if size[split] is not None and size[split] > counts[split]:
            raise TaskError(f'{spec.name} {split} {size[split]} exceeds the {counts[split]} '
                            f'{spec.unit} of {out} ({split})')
    return counts


def coco_subset(src: str, dst: str, n: int) -> str:
    """COCO annotation file with the first ``n`` images of ``src`` (``src`` if it has <= n)."""
    with open(src, encoding='utf-8') as f:
        coco = json.load(f)
    if len(coco['images']) <= n:
        return src
    coco['images'] = coco['images'][:n]
    keep = {img['id'] for img in coco['images']}
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in keep]
    atomic_write(dst, json.dumps(coco))
    return dst


def val_annotation(spec: TaskSpec, data_root: str, out_dir: str, val: int) -> str:
    """The detection val annotation a trial of ``val`` images evaluates on (made once)."""
    src = osp.join(data_dir(spec, data_root), 'annotations', 'instances_val.json')
    dst = osp.join(out_dir, 'data', f'{spec.name}_instances_val_{val}.json')
    if osp.isfile(dst):
        return dst
    return coco_subset(src, dst, val)


# ---------------------------------------------------------------------------- config
def fit_schedule(schedulers: Any, epochs: int, iters_per_epoch: int) -> List[dict]:
    """The config's LR schedule fitted to ``epochs`` (cosine T_max, warm-up <= 1/5 of it)."""
    out = []
    for s in schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]:
        s = dict(s)
        if s.get('type') == 'CosineAnnealingLR' and s.get('by_epoch', True):
            s['T_max'] = epochs
            s.pop('end', None)
        elif not s.get('by_epoch', True) and 'end' in s:
            s['end'] = min(s['end'], max(1, epochs * iters_per_epoch // 5))
        out.append(s)
    return out


def configure(cfg: Config, spec: TaskSpec, size: Mapping[str, Optional[int]], seed: int,
              work_dir: str, data_root: str, val_ann: Optional[str] = None,
              det_score_thr: Optional[float] = None, loader_workers: int = 0) -> Config:
    """Point a loaded task config at a data subset, schedule, seed and quiet work folder.

    Validation is off (the trial tests once, after training) and no checkpoint is written.
    """
    loader = dict(num_workers=loader_workers, persistent_workers=False)
    train: Dict[str, Any] = dict(loader, dataset=dict())
    test: Dict[str, Any] = dict(loader, dataset=dict())
    if size.get('train'):
        train['dataset']['indices'] = size['train']
    if size.get('val'):
        test['dataset']['indices'] = size['val']
    if size.get('batch'):
        train['batch_size'] = size['batch']
    if spec.offline:
        data = data_dir(spec, data_root)
        if spec.kind == 'cls':
            train['dataset']['data_root'] = test['dataset']['data_root'] = data
            train['dataset']['split'], test['dataset']['split'] = 'train', 'test'
        elif spec.kind == 'det':
            train['dataset']['data_root'] = test['dataset']['data_root'] = data + '/'
            if val_ann:  # the subset annotation file selects the images
                test['dataset'].pop('indices', None)
                test['dataset']['ann_file'] = val_ann
                cfg.test_evaluator = dict(cfg.test_evaluator, ann_file=val_ann)
        else:
            train['dataset'].update(ann_file=osp.join(data, 'train_list_videos.txt'),
                                    data_prefix=dict(video=osp.join(data, 'videos_train')))
            test['dataset'].update(ann_file=osp.join(data, 'val_list_videos.txt'),
                                   data_prefix=dict(video=osp.join(data, 'videos_val')))
    if spec.kind == 'det' and det_score_thr is not None:
        cfg.merge_from_dict(dict(model=dict(test_cfg=dict(score_thr=det_score_thr))))
    cfg.merge_from_dict(dict(train_dataloader=train, test_dataloader=test))
    epochs = size.get('epochs') or cfg.train_cfg.get('max_epochs', 1)
    n_train = size.get('train') or 0
    iters = max(1, -(-n_train // cfg.train_dataloader.batch_size)) if n_train else 1000
    cfg.train_cfg = dict(cfg.train_cfg, max_epochs=epochs, val_interval=epochs + 1)
    cfg.param_scheduler = fit_schedule(cfg.param_scheduler, epochs, iters)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # test once, after training
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10**6)
    cfg.default_hooks.checkpoint = None
    cfg.log_level = 'WARNING'
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'trial_{spec.name}_{uuid.uuid4().hex[:12]}'
    if cfg.get('visualizer'):  # a fresh visualizer (global instance) writing to this work_dir
        cfg.visualizer = dict(cfg.visualizer, name=cfg.experiment_name)
    return cfg


def input_shape(spec: TaskSpec, cfg: Config) -> Tuple[int, ...]:
    """One sample's shape as the backbone sees it (video: C, T, H, W; det: padded canvas)."""
    scaled = cfg.scaled
    channels = cfg.model.backbone.get('in_channels', 3)
    if spec.kind == 'det':  # square canvases, resized as the test pipeline says, then padded
        resize = next((t for t in cfg.test_dataloader.dataset.pipeline
                       if t.get('type') == 'Resize' and 'scale' in t), None)
        side = min(resize['scale']) if resize else scaled['input_size'][0]
        div = cfg.model.data_preprocessor.get('pad_size_divisor', 1)
        side = -(-side // div) * div
        return (channels, side, side)
    if spec.kind == 'video':
        return (channels, scaled['num_frames'], *scaled['input_size'])
    return (channels, *scaled['input_size'])
