"""A trial is (task, rule, seed) plus its options; :func:`run_trial` trains and measures one.

The trial key is a hash of everything that decides the result (task, the rule's name and
content, the task config as resolved under the rule, seed, options), so a study that reruns
finds its finished trials in the store even when the rule file was given by another path, and
trains again when the task config, one of its bases, or the way a rule resolves changed.
"""
import hashlib
import json
import os
import os.path as osp
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..fileio import json_ready
from .tasks import ROOT, TaskError, configure, get_task, input_shape, trial_size, val_annotation

OPTION_KEYS = ('epochs', 'train', 'val', 'batch', 'det_score_thr')


def rule_label(rule: str) -> str:
    """A rule's short name: its file name without ``.py``."""
    return osp.splitext(osp.basename(rule))[0]


def rule_digest(rule: str) -> str:
    """First 12 hex digits of the sha256 of the rule file."""
    with open(rule, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


_CONFIG_DIGESTS: Dict[Tuple[str, int, str], str] = {}


def config_digest(config_path: str, rule: str) -> str:
    """First 12 hex digits of the sha256 of ``config_path`` loaded under ``rule`` (the config
    as a dict, so comments do not count; the resolved architecture is part of it).

    Cached per (config file and its modification time, rule content) within a process:
    loading takes a third of a second.
    """
    from ..engine.config import load_with_rule
    cache_key = (osp.abspath(config_path), os.stat(config_path).st_mtime_ns, rule_digest(rule))
    if cache_key not in _CONFIG_DIGESTS:
        cfg = load_with_rule(config_path, rule)
        blob = json.dumps(json_ready(cfg.to_dict()), sort_keys=True, separators=(',', ':'))
        _CONFIG_DIGESTS[cache_key] = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return _CONFIG_DIGESTS[cache_key]


@dataclass(frozen=True)
class Trial:
    """One training run: ``task`` (a registered name), ``rule`` (a rule file), ``seed``, and
    ``options`` as sorted (name, value) pairs (epochs, train, val, batch, det_score_thr)."""

    task: str
    rule: str
    seed: int
    options: Tuple[Tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return rule_label(self.rule)

    @property
    def opts(self) -> Dict[str, Any]:
        return dict(self.options)

    @property
    def config_sha(self) -> str:
        """Digest of the task config under the rule (:func:`config_digest`)."""
        return config_digest(get_task(self.task).config_path, self.rule)

    @property
    def key(self) -> str:
        ident = dict(task=self.task, rule=self.label, rule_sha=rule_digest(self.rule),
                     config_sha=self.config_sha, seed=self.seed, options=self.opts)
        blob = json.dumps(ident, sort_keys=True, separators=(',', ':'))
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def __str__(self) -> str:
        return f'{self.task}/{self.label}/seed{self.seed}'


def make_trial(task: str, rule: str, seed: int, **options: Any) -> Trial:
    """A validated :class:`Trial`; errors name the argument and value, before any work."""
    spec = get_task(task)
    if not osp.isfile(rule):
        raise TaskError(f'rule file not found: {rule}')
    if not isinstance(seed, int) or seed < 0:
        raise TaskError(f'seed must be an integer >= 0, got {seed!r}')
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise TaskError(f'unknown trial options {unknown}; known: {list(OPTION_KEYS)}')
    size = trial_size(spec, **{k: options.get(k) for k in ('epochs', 'train', 'val', 'batch')})
    opts: Dict[str, Any] = dict(size)
    if spec.kind == 'det':
        opts['det_score_thr'] = options.get('det_score_thr')
    return Trial(task, osp.abspath(rule), seed, tuple(sorted(opts.items())))


def trial_dir(out_dir: str, trial: Trial) -> str:
    return osp.join(out_dir, 'trials', trial.task, trial.label, f'seed{trial.seed}')


def trial_row(trial: Trial, cfg: Any, metrics: Dict[str, float], model: Any,
              timings: Dict[str, Any], machine: Dict[str, Any]) -> Dict[str, Any]:
    """The store row of a trained trial: identity, the metric in the task's unit and every
    numeric metric, cost (backbone GFLOPs as MACs with attention, params; ``model`` None:
    built from ``cfg``), ``timings`` and ``machine``."""
    from ..cost import count_params, get_complexity
    spec = get_task(trial.task)
    if spec.metric not in metrics:
        raise RuntimeError(f'{trial}: the evaluator gave no {spec.metric}: {sorted(metrics)}')
    if model is None:
        import mmvitscale.models  # noqa: F401  (registers the backbones)
        from mmengine.registry import MODELS, init_default_scope
        init_default_scope(cfg.get('default_scope', 'mmengine'))
        model = MODELS.build(cfg.model)
    shape = input_shape(spec, cfg)
    cost = get_complexity(model.backbone, shape)
    rule_file = osp.relpath(trial.rule, ROOT)
    if rule_file.startswith('..'):
        rule_file = trial.rule
    return dict(
        key=trial.key, task=trial.task, rule=trial.label, rule_file=rule_file,
        rule_sha=rule_digest(trial.rule), config_sha=trial.config_sha,
        scaling=json_ready(cfg.scaling), seed=trial.seed,
        options=trial.opts, metric_name=spec.metric, metric_unit=spec.metric_label,
        metric=metrics[spec.metric] * spec.metric_scale, metrics=metrics,
        arch=json_ready(cfg.scaled['arch']), input_shape=list(shape),
        cost=dict(gflops=cost['flops'] / 1e9, params_m=cost['params'] / 1e6,
                  model_params_m=count_params(model) / 1e6),
        timings=timings, machine=machine)


def run_trial(trial: Trial, out_dir: str, data_root: str, threads: Optional[int] = None,
              launcher: str = 'none', requeue: bool = False,
              keep_checkpoints: Optional[bool] = None) -> Optional[Dict[str, Any]]:
    """Train, evaluate and count the cost of one trial; return its result row.

    Data must be prepared (:func:`~mmvitscale.experiments.tasks.ensure_data`). Training goes
    through :func:`~mmvitscale.experiments.runner.train_and_test` (the config's
    ``runner_type``, ``launcher``, resume from the trial's own latest checkpoint, ``requeue``
    on SIGTERM / SIGUSR1). Host output (pycocotools summaries, mmengine warnings) goes to the
    trial folder's ``host_output.log`` (rank r > 0: ``host_output_rank<r>.log``).
    The row holds the trial's identity, the metric (in the task's unit) and every numeric
    metric, cost (backbone GFLOPs as MACs with attention, params), timings and the machine;
    ``resumed`` when training continued from a checkpoint, ``dist`` (world size, launcher, a
    digest of each rank's final weights) when it ran as several ranks. Ranks other than 0
    return None. The checkpoints are deleted once the row is made unless
    ``keep_checkpoints`` (default: kept for real-data tasks, deleted for offline ones).
    """
    import torch

    from ..engine.config import load_with_rule
    from .runner import remove_checkpoints, train_and_test
    from .store import machine_fingerprint
    if threads:
        torch.set_num_threads(threads)
    spec = get_task(trial.task)
    opts = trial.opts
    size = {k: opts.get(k) for k in ('epochs', 'train', 'val', 'batch')}
    work_dir = trial_dir(out_dir, trial)
    os.makedirs(work_dir, exist_ok=True)
    val_ann = None
    if spec.kind == 'det' and spec.offline and size['val']:
        val_ann = val_annotation(spec, data_root, out_dir, size['val'])
    cfg = load_with_rule(spec.config_path, trial.rule)
    cfg = configure(cfg, spec, size, trial.seed, work_dir, data_root, val_ann=val_ann,
                    det_score_thr=opts.get('det_score_thr'))
    fingerprint = machine_fingerprint()
    rank = os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0')) if launcher != 'none' \
        else '0'
    log = 'host_output.log' if rank == '0' else f'host_output_rank{rank}.log'
    t_start = time.perf_counter()
    done = train_and_test(cfg, launcher=launcher, identity=trial.key, requeue=requeue,
                          log_file=osp.join(work_dir, log))
    if done.rank != 0:
        return None
    n_train = size['train'] or len(done.runner.train_dataloader.dataset)
    epochs = size['epochs'] or cfg.train_cfg['max_epochs']
    train_s = done.build_s + done.train_s  # as before: from building the runner on
    timings = dict(train_s=train_s, eval_s=done.eval_s, total_s=time.perf_counter() - t_start,
                   train_samples_per_s=n_train * epochs / train_s if train_s > 0 else None)
    row = trial_row(trial, cfg, done.metrics, done.model, timings, fingerprint)
    if done.resumed:
        row['resumed'] = done.resumed
    if done.world_size > 1:
        row['dist'] = dict(world_size=done.world_size, launcher=launcher,
                           weights_sha=done.weights_sha)
    keep = (not spec.offline) if keep_checkpoints is None else keep_checkpoints
    if not keep:
        remove_checkpoints(work_dir)
    del done
    return row
