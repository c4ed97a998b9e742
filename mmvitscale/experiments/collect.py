"""A study's report from runs made elsewhere: work dirs of ``tools/train.py`` / ``mim train``.

Each work dir holds the config mmengine dumped when training started and the scalars its
``LoggerHook`` logged (``<timestamp>/vis_data/*.json``). :func:`collect_runs` reads them:

* the dumped config, parsed as plain data (a dumped config is ``name = dict(...)`` lines; a
  file with anything else is refused, nothing in it runs);
* the task, from the config's content (model, backbone, dataset and evaluator types, and the
  offline data folder), the rule, from its ``scaling`` dict (equal to one of the study's rule
  files), and the seed, from ``randomness.seed`` (never from folder names);
* the final metric: the evaluation logged at the last epoch of the schedule.

A folder that cannot give a row is named with the reason: no dumped config, unknown task, a
rule that is none of the study's, no final metric, or two runs of one arm (both named).
:func:`run_trials_collected` stands in for the study's launcher (``--collect``): the study plans
its trials as always, takes their rows from the work dirs instead of training, and makes its
report from them as from its own, so trials trained by hand give the study's own report.
"""
import ast
import glob
import json
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .tasks import TASKS, TaskError, TaskSpec


class CollectError(TaskError):
    """A work dir that cannot give a row; the message says why."""


@dataclass
class Collected:
    """The rows found and ``(folder, reason)`` for each folder that gave none."""

    rows: List[Dict[str, Any]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- plain data
def _value(node: ast.AST, where: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_value(n, where) for n in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise CollectError(f'{where}: ** in a dict literal')
        return {_value(k, where): _value(v, where) for k, v in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == 'dict' and not node.args
            and all(k.arg is not None for k in node.keywords)):
        return {k.arg: _value(k.value, where) for k in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _value(node.operand, where)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise CollectError(f'{where}:{getattr(node, "lineno", "?")}: not plain data '
                       f'({type(node).__name__})')


def read_dumped_config(path: str) -> Dict[str, Any]:
    """A dumped config's ``name = value`` lines as a dict; :class:`CollectError` naming the
    file and line for anything that is not plain data (nothing is executed)."""
    with open(path, encoding='utf-8') as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        raise CollectError(f'{path}:{err.lineno}: not Python ({err.msg})') from err
    out: Dict[str, Any] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            out[node.targets[0].id] = _value(node.value, path)
        else:
            raise CollectError(f'{path}:{node.lineno}: not plain data '
                               f'({type(node).__name__}; a dumped config assigns values only)')
    return out


def find_config(work_dir: str) -> Tuple[str, Dict[str, Any]]:
    """The config mmengine dumped into ``work_dir`` (the ``*.py`` with a model and a train
    schedule); :class:`CollectError` when there is none or more than one."""
    found = []
    for path in sorted(glob.glob(osp.join(work_dir, '*.py'))):
        try:
            cfg = read_dumped_config(path)
        except CollectError:
            continue
        if 'model' in cfg and 'train_cfg' in cfg:
            found.append((path, cfg))
    if not found:
        raise CollectError('no dumped config (*.py with model and train_cfg) in the folder')
    if len(found) > 1:
        raise CollectError('more than one dumped config: '
                           + ', '.join(osp.basename(p) for p, _ in found))
    return found[0]


# --------------------------------------------------------------------------- identity
def _short(name: Any) -> str:
    return str(name).split('.')[-1] if name else ''


def _evaluators(cfg: Mapping[str, Any]) -> Tuple[str, ...]:
    ev = cfg.get('test_evaluator') or cfg.get('val_evaluator') or {}
    items = ev if isinstance(ev, (list, tuple)) else [ev]
    return tuple(sorted(_short(e.get('type')) for e in items if isinstance(e, Mapping)))


def _train_dataset(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    dataset = (cfg.get('train_dataloader') or {}).get('dataset') or {}
    while isinstance(dataset.get('dataset'), Mapping):  # wrappers
        dataset = dataset['dataset']
    return dataset


def signature(cfg: Mapping[str, Any]) -> Tuple[str, ...]:
    """What tells tasks apart in a config: model, backbone, train dataset and evaluators."""
    model = cfg.get('model') or {}
    return (_short(model.get('type')), _short((model.get('backbone') or {}).get('type')),
            _short(_train_dataset(cfg).get('type'))) + _evaluators(cfg)


_TASK_SIGNATURES: Dict[str, Tuple[str, ...]] = {}


def _task_signature(spec: TaskSpec) -> Tuple[str, ...]:
    if spec.name not in _TASK_SIGNATURES:
        from mmengine.config import Config
        _TASK_SIGNATURES[spec.name] = signature(Config.fromfile(spec.config_path).to_dict())
    return _TASK_SIGNATURES[spec.name]


def identify_task(cfg: Mapping[str, Any], tasks: Optional[Sequence[str]] = None) -> str:
    """The registered task (of ``tasks``, default all) whose config this one is."""
    sig = signature(cfg)
    root = str(_train_dataset(cfg).get('data_root') or '').rstrip('/')
    names = list(tasks or TASKS)
    same = [n for n in names if _task_signature(TASKS[n]) == sig]
    offline = [n for n in same if TASKS[n].offline and osp.basename(root) == TASKS[n].data_dir]
    online = [n for n in same if not TASKS[n].offline]
    match = offline or online
    if len(match) != 1:
        raise CollectError(f'unknown task: model/backbone/dataset/evaluator {list(sig)} '
                           f'(data root {root or "unset"}) is '
                           + ('none of the tasks ' if not match else 'ambiguous between ')
                           + ', '.join(match or names))
    return match[0]


def rule_scaling(rule: str) -> Dict[str, Any]:
    """The ``scaling`` dict of a rule file."""
    from mmengine.config import Config
    return dict(Config.fromfile(rule).get('scaling') or {})


def identify_rule(cfg: Mapping[str, Any], rules: Mapping[str, Mapping[str, Any]]) -> str:
    """The rule file whose ``scaling`` equals the config's (``rules``: file -> scaling)."""
    scaling = cfg.get('scaling')
    if not isinstance(scaling, Mapping):
        raise CollectError('no top-level scaling dict in the config (not a scaled config)')
    found = [r for r, s in rules.items() if _plain(s) == _plain(scaling)]
    if not found:
        raise CollectError(f'scaling {dict(scaling)} is none of the study\'s rules')
    return found[0]


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def trial_options(spec: TaskSpec, cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """epochs / train / val / batch (and det_score_thr) of a trial, from its config."""
    train = cfg.get('train_dataloader') or {}
    evaluation = cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}

    def indices(loader: Mapping[str, Any]) -> Optional[int]:
        value = (loader.get('dataset') or {}).get('indices')
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    val = indices(evaluation)
    ann = str((evaluation.get('dataset') or {}).get('ann_file') or '')
    if val is None and spec.kind == 'det' and ann.rsplit('_', 1)[-1][:-5].isdigit():
        val = int(ann.rsplit('_', 1)[-1][:-5])  # the study's val subset: ..._val_<n>.json
    opts: Dict[str, Any] = dict(epochs=(cfg.get('train_cfg') or {}).get('max_epochs'),
                                train=indices(train), val=val, batch=train.get('batch_size'))
    if spec.kind == 'det':
        opts['det_score_thr'] = ((cfg.get('model') or {}).get('test_cfg') or {}).get('score_thr')
    return opts


# --------------------------------------------------------------------------- metrics
def logged_scalars(work_dir: str) -> List[Tuple[float, Dict[str, Any]]]:
    """Every scalar line mmengine logged in ``work_dir`` (each run's ``vis_data``), with the
    modification time of its file."""
    lines = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', '*.json'))):
        mtime = os.stat(path).st_mtime
        with open(path, encoding='utf-8') as f:
            for text in f:
                try:
                    item = json.loads(text)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    lines.append((mtime, item))
    return lines


def final_metrics(work_dir: str, metric: str, epochs: int) -> Tuple[Dict[str, float], float]:
    """The evaluation logged at epoch ``epochs`` (its numeric scalars) and the training's
    wall seconds (first run's start, from its timestamp folder, to that file's last write)."""
    scalars = logged_scalars(work_dir)
    evals = [(mtime, item) for mtime, item in scalars if metric in item]
    if not evals:
        raise CollectError(f'no final metric: no {metric} logged '
                           f'({"no scalars at all" if not scalars else "no evaluation"})')
    last_step = max(int(item.get('step', -1)) for _, item in evals)
    if last_step != epochs:
        raise CollectError(f'no final metric: the last {metric} is at epoch {last_step} of '
                           f'{epochs} (unfinished, or the final epoch was not evaluated: '
                           'train_cfg.val_interval)')
    mtime, item = [e for e in evals if int(e[1].get('step', -1)) == last_step][-1]
    starts = []
    for folder in glob.glob(osp.join(work_dir, '*', 'vis_data')):
        try:
            starts.append(time.mktime(time.strptime(osp.basename(osp.dirname(folder)),
                                                    '%Y%m%d_%H%M%S')))
        except ValueError:
            pass
    metrics = {k: float(v) for k, v in item.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in ('step', 'epoch', 'iter', 'time', 'data_time')}
    return metrics, (mtime - min(starts)) if starts else 0.0


# --------------------------------------------------------------------------- rows
def run_folders(paths: Sequence[str], depth: int = 3) -> Tuple[List[str], List[Tuple[str, str]]]:
    """The run folders under ``paths`` (a folder with a ``*.py`` at its top is a run; else its
    subfolders are searched, ``depth`` levels) and the paths that hold none."""
    runs: List[str] = []
    empty: List[Tuple[str, str]] = []

    def walk(folder: str, level: int) -> bool:
        if glob.glob(osp.join(folder, '*.py')):
            runs.append(folder)
            return True
        if level >= depth:
            return False
        found = False
        for sub in sorted(os.listdir(folder)):
            if osp.isdir(osp.join(folder, sub)):
                found = walk(osp.join(folder, sub), level + 1) or found
        return found

    for path in paths:
        if not osp.isdir(path):
            empty.append((path, 'not a folder'))
        elif not walk(path, 0):
            empty.append((path, 'no work dir (no dumped config) in it'))
    return list(dict.fromkeys(runs)), empty


def collect_row(work_dir: str, trials: Sequence[Any]) -> Dict[str, Any]:
    """The store row of one work dir as the trial of ``trials`` (a study's plan) it is.

    The task comes from the config's content, the rule from its ``scaling`` (equal to the
    rule file of one of the task's trials: as written, or as the study re-matched it), the
    seed from ``randomness.seed``; every size the trial fixes (epochs, images, batch) must
    be the config's. The row has the fields :func:`~.trial.run_trial` writes.
    """
    from mmengine.config import Config

    from .store import machine_fingerprint
    from .trial import trial_row
    path, data = find_config(work_dir)
    task = identify_task(data, list(dict.fromkeys(t.task for t in trials)))
    spec = TASKS[task]
    rules = {t.rule: rule_scaling(t.rule) for t in trials if t.task == task}
    rule = identify_rule(data, rules)
    seed = (data.get('randomness') or {}).get('seed')
    match = [t for t in trials if t.task == task and t.rule == rule and t.seed == seed]
    if not match:
        raise CollectError(f'{task} / {osp.splitext(osp.basename(rule))[0]} with seed '
                           f'{seed!r} is not a trial of this study (its seeds: '
                           f'{sorted({t.seed for t in trials})})')
    trial = match[0]
    have = trial_options(spec, data)
    for key, want in trial.opts.items():
        if want is not None and have.get(key) != want:
            raise CollectError(f'{key} is {have.get(key)!r} in the config, the trial '
                               f'{trial} of this study has {want!r}')
    epochs = trial.opts.get('epochs') or have['epochs']
    metrics, train_s = final_metrics(work_dir, spec.metric, epochs)
    machine = dict(machine_fingerprint(), cpu=None, loadavg=None, threads=None,
                   source=f'collected from {work_dir}')
    row = trial_row(trial, Config(data, filename=path), metrics, None,
                    dict(train_s=train_s, eval_s=None, total_s=train_s), machine)
    row['work_dir'] = osp.abspath(work_dir)
    return row


def collect_runs(paths: Sequence[str], trials: Sequence[Any]) -> Collected:
    """Rows of the runs under ``paths`` that are trials of ``trials``; every folder that
    gives none is in ``skipped`` with the reason (two runs of one trial: both)."""
    runs, out_skipped = run_folders(paths)
    out = Collected(skipped=list(out_skipped))
    found: Dict[str, List[Dict[str, Any]]] = {}
    for folder in runs:
        try:
            row = collect_row(folder, trials)
        except (CollectError, TaskError, KeyError) as err:
            out.skipped.append((folder, str(err).strip("'")))
            continue
        found.setdefault(row['key'], []).append(row)
    for rows in found.values():
        if len(rows) > 1:
            folders = [r['work_dir'] for r in rows]
            for r in rows:
                others = ', '.join(f for f in folders if f != r['work_dir'])
                out.skipped.append((r['work_dir'], f'two runs of one arm ({r["task"]}/'
                                    f'{r["rule"]}/seed{r["seed"]}): also {others}'))
        else:
            out.rows.append(rows[0])
    return out


def run_trials_collected(trials: Sequence[Any], store: Any, out_dir: str, data_root: str,
                         workers: int = 1, threads: int = 1, say: Any = None,
                         paths: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """``--collect WORK_DIR ...``: the study's trials from runs made elsewhere, instead of
    training them (the signature of :func:`~.pool.run_trials`). Collected rows are appended
    to ``store`` and the study's report is made from them as from its own trials.
    :class:`CollectError` names the trials no folder gave."""
    from .store import owning_study
    say = say or print
    with owning_study(osp.dirname(store.path), say=say):
        store.reload()
        got = collect_runs(paths, trials)
        for folder, why in got.skipped:
            say(f'not used: {folder}: {why}')
        for row in got.rows:
            store.append(row)
        keys = {r['key'] for r in got.rows}
        missing = [str(t) for t in dict.fromkeys(trials) if t.key not in keys]
        say(f'collected {len(keys)} of {len(set(trials))} trials from '
            f'{len(got.rows) + len(got.skipped)} folder(s)')
        if missing:
            raise CollectError(f'no usable run of {len(missing)} trial(s): '
                               + ', '.join(missing))
        return [store.get(t.key) for t in trials]
