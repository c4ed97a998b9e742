"""The one trial runner every study trains through: config -> runner -> train -> test.

:func:`train_and_test` builds the runner through mmengine's ``RUNNERS`` registry, so a
config's ``runner_type`` (``mmvitscale.DataCheckedRunner`` on the real-data tasks, or a user's
own runner type) is honoured; it passes the launcher (``'none'``, ``'pytorch'``, ``'slurm'``:
one call per rank, mmengine initialises the process group), writes one checkpoint per epoch and
resumes the trial from its own latest checkpoint when it is run again (mmengine's
``resume``, which :mod:`mmvitscale.compat` routes through the project's checkpoint loader).
A resume is exact: the random states of every rank are saved in the checkpoint and restored,
and a checkpoint saved mid-epoch resumes with the batches of that epoch not yet trained.

With ``requeue=True``, SIGTERM and SIGUSR1 (Slurm's warning before a time limit or
preemption) make every rank stop after the iteration in progress: the trial saves a checkpoint,
asks Slurm to requeue its job (SIGUSR1, inside a Slurm job) and exits by :class:`Preempted`.

:func:`write_row` writes a result row atomically (temporary file, fsync, rename).
"""
import contextlib
import glob
import itertools
import json
import os
import os.path as osp
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from mmengine.hooks import Hook

LAUNCHERS = ('none', 'pytorch', 'slurm')
PREEMPT_SIGNALS = ('SIGTERM', 'SIGUSR1')
IDENTITY_FILE = 'trial_identity.txt'
HookSpec = Union[Hook, Tuple[Hook, str]]


class Preempted(SystemExit):
    """A trial stopped by SIGTERM / SIGUSR1 after saving its checkpoint (``requeue=True``).

    ``code`` is 0 when Slurm accepted the requeue (the job runs again and resumes), else 1.
    """

    def __init__(self, message: str, requeued: bool) -> None:
        super().__init__(0 if requeued else 1)
        self.message = message
        self.requeued = requeued

    def __str__(self) -> str:
        return self.message


@dataclass
class TrainTest:
    """What :func:`train_and_test` gives back: the runner (for extra evaluation), the test
    metrics (numbers only), timings, where it resumed from, and the rank layout."""

    runner: Any
    metrics: Dict[str, float]
    train_s: float
    eval_s: float
    build_s: float
    rank: int = 0
    world_size: int = 1
    resumed: Optional[Dict[str, Any]] = None
    weights_sha: List[str] = field(default_factory=list)

    @property
    def model(self) -> Any:
        """The model without its distributed wrapper."""
        from mmengine.model import is_model_wrapper
        model = self.runner.model
        return model.module if is_model_wrapper(model) else model

    def test(self, log_file: Optional[str] = None) -> Dict[str, float]:
        """``runner.test()`` (stdout to ``log_file`` when given): the numeric metrics."""
        log = open(log_file, 'a') if log_file else None
        try:
            with contextlib.redirect_stdout(log) if log else contextlib.nullcontext():
                return {k: float(v) for k, v in self.runner.test().items()
                        if isinstance(v, (int, float))}
        finally:
            if log:
                log.close()


# --------------------------------------------------------------------------- random states
def _rng_state() -> Dict[str, Any]:
    import numpy as np
    import torch
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(torch=torch.get_rng_state(),
                 numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype('int64')), pos=int(pos),
                            has_gauss=int(has_gauss), gauss=float(gauss)),
                 python=random.getstate())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    import numpy as np
    import torch
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype('uint32'), n['pos'],
                         n['has_gauss'], n['gauss']))
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


class _SkipFirst:
    """A sampler that leaves out the first ``skip`` indices of its source for one epoch and
    restores the random states when the epoch's first batch is drawn."""

    def __init__(self, source: Any, skip: int, rng: Optional[Dict[str, Any]]) -> None:
        self.source, self.skip, self.rng = source, skip, rng

    def __iter__(self) -> Iterator[int]:
        it = iter(self.source)
        if self.rng is not None:  # after the loader drew its base seed, as the
            _set_rng_state(self.rng)  # uninterrupted run had drawn it before the save
        return itertools.islice(it, self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.source) - self.skip)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)


class TrialStateHook(Hook):
    """Random states in checkpoints, exact mid-epoch resume, and (``requeue``) a checkpoint
    and exit on SIGTERM / SIGUSR1. Registered by :func:`train_and_test`."""

    priority = 'LOW'  # before CheckpointHook (VERY_LOW) in after_train_epoch

    def __init__(self, requeue: bool = False) -> None:
        self.requeue = requeue
        self.signal_name: Optional[str] = None
        self.resumed: Optional[Dict[str, Any]] = None
        self._states: Optional[List[Dict[str, Any]]] = None
        self._restore: Optional[Dict[str, Any]] = None
        self._previous: Dict[int, Any] = {}
        self._wrapped: Optional[Tuple[Any, Any]] = None  # (batch sampler, its own sampler)

    # signals -------------------------------------------------------------------------
    def install(self) -> None:
        if not self.requeue:
            return
        for name in PREEMPT_SIGNALS:
            try:
                self._previous[getattr(signal, name)] = signal.signal(
                    getattr(signal, name), self._on_signal)
            except ValueError:  # not the main thread: no preemption handling
                return

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name

    # random states -------------------------------------------------------------------
    def _gather_states(self) -> None:
        from mmengine.dist import all_gather_object, get_world_size
        state = _rng_state()
        self._states = all_gather_object(state) if get_world_size() > 1 else [state]

    def after_train_epoch(self, runner) -> None:
        self._gather_states()  # CheckpointHook saves after this hook

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._states is None:  # a save this hook did not prepare (one rank only)
            self._states = [_rng_state()]
        checkpoint['rng_states'] = self._states
        self._states = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        from mmengine.dist import get_rank, get_world_size
        meta = checkpoint.get('meta', {})
        self.resumed = dict(epoch=int(meta.get('epoch', 0)), iter=int(meta.get('iter', 0)))
        states = checkpoint.get('rng_states')
        if states and len(states) == get_world_size():
            self._restore = states[get_rank()]
            _set_rng_state(self._restore)

    def before_train_epoch(self, runner) -> None:
        """The epoch a mid-epoch checkpoint was saved in leaves out the batches it trained
        (exact with PyTorch's BatchSampler; a grouping one such as mmdet's
        AspectRatioBatchSampler leaves out as many samples, not the same batches)."""
        from mmengine.runner import EpochBasedTrainLoop
        if self.resumed is None or not isinstance(runner.train_loop, EpochBasedTrainLoop):
            return
        loader = runner.train_loop.dataloader
        skip = runner.iter - runner.epoch * len(loader)
        if 0 < skip < len(loader) and getattr(loader, 'batch_sampler', None) is not None:
            batches = loader.batch_sampler
            self._wrapped = (batches, batches.sampler)
            batches.sampler = _SkipFirst(batches.sampler, skip * batches.batch_size,
                                         self._restore)
        self._restore = None

    def unwrap_sampler(self) -> None:
        """Give the batch sampler its own sampler back (after the resumed epoch)."""
        if self._wrapped is not None:
            self._wrapped[0].sampler = self._wrapped[1]
            self._wrapped = None

    # preemption ----------------------------------------------------------------------
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if not self.requeue:
            return
        import torch
        from mmengine.dist import all_reduce, barrier, get_rank, get_world_size
        flag = torch.tensor([1 if self.signal_name else 0])
        if get_world_size() > 1:  # every rank stops after the same iteration
            all_reduce(flag, op='max')
        if not int(flag.item()):
            return
        self._gather_states()
        name = f'iter_{runner.iter + 1}.pth'
        runner.save_checkpoint(runner.work_dir, name, by_epoch=False)
        if get_rank() == 0:
            with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
                f.write(osp.join(runner.work_dir, name))
        barrier()
        why = self.signal_name or 'another rank was signalled'
        requeued = False
        if get_rank() == 0 and self.signal_name == 'SIGUSR1':
            requeued = slurm_requeue()
        raise Preempted(f'{why}: saved {osp.join(runner.work_dir, name)} at epoch '
                        f'{runner.epoch}, iteration {runner.iter + 1}'
                        + ('; Slurm requeues the job' if requeued else ''), requeued)


def slurm_requeue() -> bool:
    """Ask Slurm to requeue the job this process runs in; False outside Slurm or on error."""
    job = os.environ.get('SLURM_JOB_ID')
    if os.environ.get('SLURM_ARRAY_JOB_ID') and os.environ.get('SLURM_ARRAY_TASK_ID'):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if not job:
        return False
    try:
        out = subprocess.run(['scontrol', 'requeue', job], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


class _EpochEnd(Hook):
    priority = 'LOWEST'

    def __init__(self, state: TrialStateHook) -> None:
        self.state = state

    def after_train_epoch(self, runner) -> None:
        self.state.unwrap_sampler()
        for path in glob.glob(osp.join(runner.work_dir, 'iter_*.pth')):  # superseded
            os.remove(path)


# --------------------------------------------------------------------------- the runner
def build_runner(cfg: Any) -> Any:
    """The runner of ``cfg`` through mmengine's ``RUNNERS``: ``cfg.runner_type`` when set
    (a registered name, e.g. ``'mmvitscale.DataCheckedRunner'``), else mmengine's Runner."""
    from mmengine.registry import RUNNERS

    import mmvitscale.registry  # noqa: F401  (the mmvitscale.* runner types)
    return RUNNERS.build(cfg)


def _weights_sha(model: Any) -> str:
    import hashlib
    digest = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def config_identity(cfg: Any) -> str:
    """A digest of everything in ``cfg`` that decides a training (not its work folder, run
    name or launcher): checkpoints of another identity are never resumed."""
    import hashlib

    from ..fileio import json_ready
    skip = ('work_dir', 'experiment_name', 'visualizer', 'launcher', 'resume', 'load_from')
    data = {k: v for k, v in cfg.to_dict().items() if k not in skip}
    blob = json.dumps(json_ready(data), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def prepare_resume(work_dir: str, identity: str) -> bool:
    """Keep the checkpoints of ``work_dir`` only when they belong to ``identity`` (a trial
    key); otherwise delete them. Returns whether a checkpoint to resume from is there."""
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, IDENTITY_FILE)
    old = None
    if osp.isfile(path):
        with open(path) as f:
            old = f.read().strip()
    if old != identity:
        remove_checkpoints(work_dir)
        with open(path, 'w') as f:
            f.write(identity + '\n')
    return osp.isfile(osp.join(work_dir, 'last_checkpoint'))


def remove_checkpoints(work_dir: str) -> None:
    """Delete a trial's checkpoints (``*.pth`` and ``last_checkpoint``)."""
    for path in glob.glob(osp.join(work_dir, '*.pth')) + [osp.join(work_dir,
                                                                   'last_checkpoint')]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def train_and_test(cfg: Any, launcher: str = 'none', resume: bool = True,
                   checkpoints: bool = True, identity: Optional[str] = None,
                   hooks: Sequence[HookSpec] = (), log_file: Optional[str] = None,
                   requeue: bool = False, test: bool = True) -> TrainTest:
    """Train ``cfg`` and test the trained model once; the one trial sequence of every study.

    Args:
        cfg: a configured trial config (its ``work_dir`` is the trial's folder).
        launcher: ``'none'`` (one process), ``'pytorch'`` (torchrun ranks) or ``'slurm'``
            (srun ranks); every rank calls this function.
        resume: resume from the trial's latest checkpoint when there is one.
        checkpoints: save a checkpoint after each epoch (needed to resume).
        identity: the trial key (default: :func:`config_identity`); checkpoints in
            ``work_dir`` left by another identity are deleted first (a changed trial never
            resumes from a stale one).
        hooks: extra hooks, each a hook or ``(hook, priority)``.
        log_file: where this rank's stdout goes while it trains (host summaries, warnings).
        requeue: stop on SIGTERM / SIGUSR1 with a checkpoint (:class:`Preempted`).
        test: run ``runner.test()`` after training.
    """
    from mmengine.dist import barrier, get_rank, get_world_size
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    cfg.launcher = launcher
    if checkpoints:
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, by_epoch=True,
                                            max_keep_ckpts=1, priority='LOWEST')
    if resume and checkpoints:
        cfg.resume, cfg.load_from = True, None
        identity = identity or config_identity(cfg)
    state = TrialStateHook(requeue=requeue)
    log = open(log_file, 'a') if log_file else None
    try:
        with contextlib.redirect_stdout(log) if log else contextlib.nullcontext():
            t0 = time.perf_counter()
            runner = build_runner(cfg)
            for hook in [state, _EpochEnd(state)] + list(hooks):
                if isinstance(hook, tuple):
                    runner.register_hook(hook[0], priority=hook[1])
                else:
                    runner.register_hook(hook)
            build_s = time.perf_counter() - t0
            if resume and checkpoints:  # the checkpoint is looked for when training starts
                if get_rank() == 0:
                    prepare_resume(cfg.work_dir, identity)
                barrier()
            state.install()
            try:
                t0 = time.perf_counter()
                runner.train()
                train_s = time.perf_counter() - t0
                # trained in memory: test() must not load the last checkpoint again
                runner._has_loaded = True
            finally:
                state.uninstall()
    finally:
        if log:
            log.close()
    out = TrainTest(runner, {}, train_s, 0.0, build_s, get_rank(), get_world_size(),
                    state.resumed)
    if test:
        t0 = time.perf_counter()
        out.metrics = out.test(log_file)
        out.eval_s = time.perf_counter() - t0
    if out.world_size > 1:
        from mmengine.dist import all_gather_object
        out.weights_sha = all_gather_object(_weights_sha(out.model))
    return out


def resumed_text(resumed: Optional[Dict[str, Any]]) -> str:
    """``'resumed from epoch 1, iteration 7'`` (empty when the trial started afresh)."""
    if not resumed:
        return ''
    return f"resumed from epoch {resumed['epoch']}, iteration {resumed['iter']}"


def write_row(path: str, row: Dict[str, Any]) -> str:
    """Write ``row`` as JSON to ``path`` atomically (the reader never sees half a row)."""
    tmp = f'{path}.tmp{os.getpid()}.{socket.gethostname()}'
    with open(tmp, 'w') as f:
        json.dump(row, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
