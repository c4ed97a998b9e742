"""Run a study's trials as Slurm jobs instead of local processes (``--launcher slurm``).

:func:`run_trials_slurm` has the contract of :func:`~mmvitscale.experiments.pool.run_trials`:
trials already in the store are skipped, rows are appended to the store (by this process
only) as trials finish, and the study's rows come back in order. The pending trials of one call
become one job array (``sbatch --array=0-N``); array task ``i`` runs
``python -m mmvitscale.experiments.slurm run MANIFEST i``, which calls the same
:func:`~mmvitscale.experiments.trial.run_trial` a local worker calls (so a seed gives the same
metrics on either launcher) and writes its row to ``<trial dir>/row.json``.

Everything a rerun needs is under ``<out_dir>/slurm/``: ``jobs.jsonl`` (one line per
submission: job id, trial keys in array order, log folder) and one folder per submission with
the manifest, the job script and the logs (``<job>_<index>.log``). A rerun of the same command
first collects rows that finished jobs left behind, then waits for trials whose array task is
still queued or running, and submits only the trials that are missing or failed. A failed trial
(its task left the queue without a row) is reported with its log path, and the study stops
with an error after the other trials are in the store.

The out dir, the data root and the Python environment must be visible to the compute nodes at
the same paths (a shared file system), as for any Slurm job.
"""
import argparse
import dataclasses
import functools
import json
import os
import os.path as osp
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .bill import DEFAULT_GPU_TFLOPS, bill_lines
from .pool import Progress, Say, default_say, init_worker
from .runner import Preempted, resumed_text, write_row
from .store import ResultStore, TrialClaim, owning_study
from .tasks import TASKS, TaskSpec, get_task, register_task
from .trial import Trial, run_trial, trial_dir

SUBDIR = 'slurm'
JOBS = 'jobs.jsonl'
ROW = 'row.json'


class SlurmError(RuntimeError):
    """A study could not run on Slurm: missing client, failed sbatch / squeue, failed trials.
    Study tools report it as one line (its message names the job or log to look at)."""


class DryRunDone(SystemExit):
    """Raised after ``--dry-run`` printed the job script: nothing was submitted (exit 0)."""

    def __init__(self) -> None:
        super().__init__(0)


@dataclass
class SlurmOptions:
    """How trials are submitted: partition, resources per trial, extra ``#SBATCH`` options.

    A trial runs as ``tasks_per_trial`` ranks (default: one per GPU, else 1) over
    ``nodes_per_trial`` nodes, ``cpus_per_task`` cores each; ``gpus_per_trial`` GPUs in all
    (``--gres=gpu:G/N`` per node). ``requeue``: the job is requeueable and gets SIGUSR1
    ``signal_s`` seconds before its time limit; the trial then saves a checkpoint and has
    itself requeued (:mod:`mmvitscale.experiments.runner`).
    """

    partition: Optional[str] = None
    gpus_per_trial: int = 0
    cpus_per_task: int = 1
    sbatch_args: Sequence[str] = field(default_factory=tuple)
    job_name: str = 'mmvitscale-study'
    python: str = sys.executable
    poll_s: float = 5.0
    dry_run: bool = False
    tasks_per_trial: Optional[int] = None
    nodes_per_trial: int = 1
    requeue: bool = False
    signal_s: int = 120
    keep_checkpoints: Optional[bool] = None
    gpu_tflops: float = DEFAULT_GPU_TFLOPS

    @property
    def tasks(self) -> int:
        return self.tasks_per_trial or max(1, self.gpus_per_trial)

    def check(self) -> None:
        """``ValueError`` naming the flag and value of a layout that cannot run."""
        for flag, value, low in (('--gpus-per-trial', self.gpus_per_trial, 0),
                                 ('--cpus-per-task', self.cpus_per_task, 1),
                                 ('--nodes-per-trial', self.nodes_per_trial, 1),
                                 ('--tasks-per-trial', self.tasks, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f'{flag} must be an integer >= {low}, got {value!r}')
        if self.poll_s <= 0:
            raise ValueError(f'--poll must be > 0, got {self.poll_s}')
        if not self.gpu_tflops > 0:
            raise ValueError(f'--gpu-tflops must be > 0, got {self.gpu_tflops}')
        if self.gpus_per_trial and self.tasks != self.gpus_per_trial:
            raise ValueError(f'one rank per GPU: --tasks-per-trial {self.tasks} must equal '
                             f'--gpus-per-trial {self.gpus_per_trial}')
        if self.tasks % self.nodes_per_trial:
            raise ValueError(f'--tasks-per-trial {self.tasks} must be a multiple of '
                             f'--nodes-per-trial {self.nodes_per_trial}')


# --------------------------------------------------------------------------- job side
def _trial_from(entry: Dict[str, Any]) -> Trial:
    opts = tuple(sorted((k, v) for k, v in entry['options'].items()))
    trial = Trial(entry['task'], entry['rule'], int(entry['seed']), opts)
    if trial.key != entry['key']:
        raise SlurmError(f'{trial}: key {trial.key} differs from the submitted '
                         f'{entry["key"]} (was the rule file edited after submission?)')
    return trial


def _job_label() -> str:
    job = os.environ.get('SLURM_ARRAY_JOB_ID')
    if job:
        return f"job {job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return f"job {os.environ['SLURM_JOB_ID']}" if 'SLURM_JOB_ID' in os.environ else 'local'


def _load_manifest(manifest: str, index: int) -> Tuple[Dict[str, Any], Trial]:
    """The manifest and its trial ``index``; tasks the submitting study had registered (a
    user's own) are registered here too."""
    with open(manifest) as f:
        man = json.load(f)
    for name, fields in man.get('task_specs', {}).items():
        if name not in TASKS:
            register_task(TaskSpec(**fields))
    return man, _trial_from(man['trials'][index])


def rank_command(man: Dict[str, Any], manifest: str, index: int) -> List[str]:
    """How one trial's ranks are started: srun (in the Slurm job), torchrun (local) or one
    process."""
    me = [man.get('python', sys.executable), '-u', '-m', 'mmvitscale.experiments.slurm', 'rank',
          manifest, str(index)]
    if man.get('launcher') == 'slurm':
        return ['srun', '--kill-on-bad-exit=1'] + me
    if man.get('launcher') == 'pytorch' and man.get('tasks', 1) > 1:
        return [me[0], '-m', 'torch.distributed.run', '--standalone',
                f"--nproc_per_node={man['tasks']}"] + me[2:]
    return me


def run_manifest_task(manifest: str, index: int) -> Optional[str]:
    """Run trial ``index`` of a submission's manifest as its ranks; returns the row file, or
    None when no row came (a preempted trial: Slurm requeues it, or the rerun resumes it).

    The trial folder is claimed first (:class:`~mmvitscale.experiments.store.TrialClaim`):
    a second task on the same trial stops with an error naming the holder; a row already
    there (an earlier task finished it) is not trained again.
    """
    man, trial = _load_manifest(manifest, index)
    work = trial_dir(man['out_dir'], trial)
    os.makedirs(work, exist_ok=True)
    path = osp.join(work, ROW)
    with TrialClaim(work, f'{trial} ({_job_label()})'):
        if _row_of(man['out_dir'], trial) is not None:
            print(f'{trial}: finished before; row {path}', flush=True)
            return path
        cmd = rank_command(man, manifest, index)
        print(f'{trial}: {" ".join(cmd)}', flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            raise SystemExit(rc)
    if _row_of(man['out_dir'], trial) is None:
        print(f'{trial}: no row (preempted: it resumes from its checkpoint when run again)',
              flush=True)
        return None
    return path


def run_rank(manifest: str, index: int) -> Optional[str]:
    """One rank of trial ``index``: train through :func:`~.trial.run_trial`; rank 0 writes
    ``<trial dir>/row.json`` atomically."""
    man, trial = _load_manifest(manifest, index)
    tasks = man.get('tasks', 1)
    launcher = 'none' if tasks == 1 else man.get('launcher', 'none')
    if launcher == 'local':
        launcher = 'none'
    init_worker(man['threads'])
    try:
        row = run_trial(trial, man['out_dir'], man['data_root'], man['threads'],
                        launcher=launcher, requeue=man.get('requeue', False),
                        keep_checkpoints=man.get('keep_checkpoints'))
    except Preempted as stop:
        print(f'{trial}: {stop}', flush=True)
        raise
    if row is None:  # not rank 0
        return None
    path = write_row(osp.join(trial_dir(man['out_dir'], trial), ROW), row)
    dist = row.get('dist') or dict(world_size=1, launcher=launcher)
    extra = ''.join(f', {t}' for t in [resumed_text(row.get('resumed'))] if t)
    print(f'{trial}: {row["metric"]:.2f} {row["metric_unit"]} (world size '
          f'{dist["world_size"]}, launcher {dist["launcher"]}{extra}) -> {path}', flush=True)
    return path


# --------------------------------------------------------------------------- controller side
def job_script(manifest: str, n: int, log_dir: str, opts: SlurmOptions, threads: int) -> str:
    """The sbatch script of one submission (an array of ``n`` trials, each ``opts.tasks``
    ranks started by srun)."""
    import mmvitscale
    pkg_parent = osp.dirname(osp.dirname(osp.abspath(mmvitscale.__file__)))
    nodes = opts.nodes_per_trial
    lines = ['#!/usr/bin/env bash',
             f'#SBATCH --job-name={opts.job_name}',
             f'#SBATCH --array=0-{n - 1}',
             f'#SBATCH --ntasks={opts.tasks}',
             f'#SBATCH --cpus-per-task={opts.cpus_per_task}',
             f'#SBATCH --output={osp.join(log_dir, "%A_%a.log")}']
    if nodes > 1:
        lines += [f'#SBATCH --nodes={nodes}', f'#SBATCH --ntasks-per-node={opts.tasks // nodes}']
    if opts.partition:
        lines.append(f'#SBATCH --partition={opts.partition}')
    if opts.gpus_per_trial > 0:
        lines.append(f'#SBATCH --gres=gpu:{opts.gpus_per_trial // nodes}')
    if opts.requeue:
        lines += ['#SBATCH --requeue', f'#SBATCH --signal=USR1@{opts.signal_s}',
                  '#SBATCH --open-mode=append']  # a requeued run adds to the log
    lines += [f'#SBATCH {arg}' for arg in opts.sbatch_args]
    lines += ['set -euo pipefail',
              f'export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}',
              f'export PYTHONPATH={shlex.quote(pkg_parent)}${{PYTHONPATH:+:$PYTHONPATH}}',
              '# ranks of one trial meet on the first node; one port per array task',
              'export MASTER_PORT=$((20000 + SLURM_JOB_ID % 40000))',
              f'exec {shlex.quote(opts.python)} -u -m mmvitscale.experiments.slurm run '
              f'{shlex.quote(manifest)} "$SLURM_ARRAY_TASK_ID"']
    return '\n'.join(lines) + '\n'


def _slurm(cmd: List[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as err:
        raise SlurmError(f'{cmd[0]} not found: --launcher slurm needs the Slurm client '
                         'commands on PATH') from err


def queued_indices(job_id: str) -> Set[int]:
    """Array indices of ``job_id`` still pending, running or completing (empty when gone)."""
    out = _slurm(['squeue', '-h', '-r', '-j', job_id, '-o', '%K'])
    if out.returncode != 0:
        if 'Invalid job id' in out.stderr:
            return set()  # finished and already purged by slurmctld
        raise SlurmError(f'squeue -j {job_id} failed: {out.stderr.strip()}')
    found = set()
    for token in out.stdout.split():
        if token.isdigit():
            found.add(int(token))
    return found


def _row_of(out_dir: str, trial: Trial) -> Optional[Dict[str, Any]]:
    path = osp.join(trial_dir(out_dir, trial), ROW)
    try:
        with open(path) as f:
            row = json.load(f)
    except (OSError, ValueError):
        return None
    return row if row.get('key') == trial.key else None


def _submissions(out_dir: str) -> List[Dict[str, Any]]:
    path = osp.join(out_dir, SUBDIR, JOBS)
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().endswith('}')]


def write_manifest(path: str, trials: Sequence[Trial], out_dir: str, data_root: str,
                   threads: int, launcher: str, tasks: int, requeue: bool = False,
                   keep_checkpoints: Optional[bool] = None,
                   python: str = sys.executable) -> str:
    """The trials of one submission and how to run them (read by ``... slurm run``)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    entries = [dict(key=t.key, task=t.task, rule=t.rule, seed=t.seed, options=t.opts)
               for t in trials]
    specs = {t.task: dataclasses.asdict(get_task(t.task)) for t in trials}
    with open(path, 'w') as f:
        json.dump(dict(out_dir=out_dir, data_root=data_root, threads=threads,
                       launcher=launcher, tasks=tasks, requeue=requeue,
                       keep_checkpoints=keep_checkpoints, python=python, task_specs=specs,
                       trials=entries), f, indent=1)
    return path


def _submit(pending: List[Trial], out_dir: str, data_root: str, threads: int,
            opts: SlurmOptions, say: Say) -> Optional[Dict[str, Any]]:
    stamp = time.strftime('%Y%m%d_%H%M%S') + f'_{os.getpid()}'
    sub_dir = osp.join(out_dir, SUBDIR, stamp)
    manifest = osp.join(sub_dir, 'manifest.json')
    script = job_script(manifest, len(pending), sub_dir, opts, threads)
    cmd = ['sbatch', '--parsable', osp.join(sub_dir, 'job.sh')]
    if opts.dry_run:
        say(f'--dry-run: would write {manifest} ({len(pending)} trials: '
            f'{", ".join(str(t) for t in pending)}) and run: {" ".join(cmd)}')
        say(f'--- {osp.join(sub_dir, "job.sh")}\n{script}---')
        for line in bill_lines(pending, opts.gpus_per_trial, opts.gpu_tflops):
            say(line)
        return None
    write_manifest(manifest, pending, out_dir, data_root, threads, 'slurm', opts.tasks,
                   opts.requeue, opts.keep_checkpoints, opts.python)
    with open(cmd[-1], 'w') as f:
        f.write(script)
    out = _slurm(cmd)
    if out.returncode != 0:
        raise SlurmError(f'sbatch failed (rc {out.returncode}): {out.stderr.strip()}; '
                         f'script {cmd[-1]}')
    job_id = out.stdout.strip().split(';')[0]
    record = dict(job_id=job_id, keys=[t.key for t in pending], log_dir=sub_dir,
                  submitted=time.strftime('%Y-%m-%dT%H:%M:%S'))
    with open(osp.join(out_dir, SUBDIR, JOBS), 'a') as f:
        f.write(json.dumps(record) + '\n')
    say(f'submitted {len(pending)} trial(s) as job array {job_id} '
        f'(partition {opts.partition or "default"}, {opts.tasks} rank(s) x '
        f'{opts.cpus_per_task} CPU(s)'
        f'{f", {opts.gpus_per_trial} GPU(s)" if opts.gpus_per_trial else ""} per trial); '
        f'logs {osp.join(sub_dir, job_id + "_<index>.log")}')
    return record


def run_trials_slurm(trials: Sequence[Trial], store: ResultStore, out_dir: str,
                     data_root: str, workers: int = 1, threads: int = 1,
                     say: Optional[Say] = None,
                     options: Optional[SlurmOptions] = None) -> List[Dict[str, Any]]:
    """Run every trial not yet in ``store`` as a Slurm job; return the rows of ``trials``.

    ``workers`` is accepted for the signature of ``run_trials`` and unused (Slurm runs as many
    array tasks at once as the partition has room for); ``threads`` is the torch / OpenMP
    threads per trial (keep it <= ``cpus_per_task``). The study's out dir is held
    (:func:`~mmvitscale.experiments.store.hold_study`) unless ``dry_run``.
    """
    opts = options or SlurmOptions()
    opts.check()
    say = say or default_say
    if opts.dry_run:
        return _run_slurm(trials, store, out_dir, data_root, threads, say, opts)
    with owning_study(osp.dirname(store.path), say=say):  # a second study waits for us
        store.reload()  # rows a study that held the out dir before us appended
        return _run_slurm(trials, store, out_dir, data_root, threads, say, opts)


def _run_slurm(trials: Sequence[Trial], store: ResultStore, out_dir: str, data_root: str,
               threads: int, say: Say, opts: SlurmOptions) -> List[Dict[str, Any]]:
    out_dir, data_root = osp.abspath(out_dir), osp.abspath(data_root)
    unique = list({t.key: t for t in trials}.values())
    pending = {t.key: t for t in unique if t.key not in store}
    say(f'{len(unique)} trials: {len(unique) - len(pending)} already in {store.path}, '
        f'{len(pending)} to run on Slurm')
    progress = Progress(list(pending.values()), say)

    def collect(keys) -> None:
        for key in list(keys):
            row = _row_of(out_dir, pending[key])
            if row is not None:
                store.append(row)
                progress.finished(pending[key], row)
                del pending[key]

    collect(list(pending))  # rows left by jobs of an interrupted earlier run
    waiting: Dict[str, Tuple[str, int, str]] = {}  # key -> (job id, index, log dir)
    for sub in _submissions(out_dir):
        live = [i for i, key in enumerate(sub['keys']) if key in pending and key not in waiting]
        if live:
            queued = queued_indices(sub['job_id'])
            for i in live:
                if i in queued:
                    waiting[sub['keys'][i]] = (sub['job_id'], i, sub['log_dir'])
    if waiting:
        say(f'{len(waiting)} trial(s) still queued or running from earlier submission(s): '
            'waiting for them instead of resubmitting')
    fresh = [t for key, t in pending.items() if key not in waiting]
    if fresh:
        record = _submit(fresh, out_dir, data_root, threads, opts, say)
        if record is None:
            raise DryRunDone()
        for i, key in enumerate(record['keys']):
            waiting[key] = (record['job_id'], i, record['log_dir'])
    elif opts.dry_run:
        say('--dry-run: nothing to submit')
        raise DryRunDone()

    failed: List[str] = []
    last_status = None
    while waiting:
        queued = {job: queued_indices(job) for job in {w[0] for w in waiting.values()}}
        collect([k for k in waiting])  # after the queue query: a task gone has its row now
        for key in [k for k in waiting if k not in pending]:
            del waiting[key]
        for key, (job, i, log_dir) in list(waiting.items()):
            if i not in queued[job]:
                log = osp.join(log_dir, f'{job}_{i}.log')
                failed.append(f'{pending[key]} (job {job}_{i}): no result; log {log}')
                say(f'FAILED {failed[-1]}')
                del waiting[key]
        status = f'{len(waiting)} trial(s) queued or running'
        if waiting and status != last_status:
            say(status)
            last_status = status
        if waiting:
            time.sleep(opts.poll_s)
    if failed:
        raise SlurmError(f'{len(failed)} trial(s) failed on Slurm (rerun the same command '
                         'to resubmit only these):\n  ' + '\n  '.join(failed))
    return [store.get(t.key) for t in trials]


def run_trials_torchrun(trials: Sequence[Trial], store: ResultStore, out_dir: str,
                        data_root: str, workers: int = 1, threads: int = 1,
                        say: Optional[Say] = None, tasks: int = 2, requeue: bool = False,
                        keep_checkpoints: Optional[bool] = None) -> List[Dict[str, Any]]:
    """``--launcher pytorch``: every trial not yet in ``store`` runs as ``tasks`` torchrun
    ranks on this machine (gloo on CPU), one trial after another (``workers`` at once);
    rank 0 writes the row, which is appended here. Returns the rows of ``trials``."""
    say = say or default_say
    with owning_study(osp.dirname(store.path), say=say):  # a second study waits for us
        store.reload()
        return _run_torchrun(trials, store, out_dir, data_root, workers, threads, say, tasks,
                             requeue, keep_checkpoints)


def _run_torchrun(trials: Sequence[Trial], store: ResultStore, out_dir: str, data_root: str,
                  workers: int, threads: int, say: Say, tasks: int, requeue: bool,
                  keep_checkpoints: Optional[bool]) -> List[Dict[str, Any]]:
    out_dir, data_root = osp.abspath(out_dir), osp.abspath(data_root)
    unique = list({t.key: t for t in trials}.values())
    pending = [t for t in unique if t.key not in store]
    say(f'{len(unique)} trials: {len(unique) - len(pending)} already in {store.path}, '
        f'{len(pending)} to run as {tasks} torchrun rank(s) each')
    progress = Progress(pending, say, workers)
    stamp = time.strftime('%Y%m%d_%H%M%S') + f'_{os.getpid()}'
    sub_dir = osp.join(out_dir, 'torchrun', stamp)
    manifest = write_manifest(osp.join(sub_dir, 'manifest.json'), pending, out_dir, data_root,
                              threads, 'pytorch', tasks, requeue, keep_checkpoints)
    running: Dict[int, Tuple[subprocess.Popen, Any, str]] = {}
    queue = list(enumerate(pending))
    failed: List[str] = []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    while queue or running:
        while queue and len(running) < workers:
            i, trial = queue.pop(0)
            log = osp.join(sub_dir, f'{i}.log')
            f = open(log, 'w')
            proc = subprocess.Popen([sys.executable, '-u', '-m', 'mmvitscale.experiments.slurm',
                                     'run', manifest, str(i)], stdout=f,
                                    stderr=subprocess.STDOUT, env=env)
            running[i] = (proc, f, log)
        time.sleep(0.2)
        for i, (proc, f, log) in list(running.items()):
            if proc.poll() is None:
                continue
            f.close()
            del running[i]
            trial = pending[i]
            row = _row_of(out_dir, trial)
            if row is None:
                failed.append(f'{trial}: no result (rc {proc.returncode}); log {log}')
                say(f'FAILED {failed[-1]}')
                continue
            store.append(row)
            progress.finished(trial, row)
    if failed:
        raise SlurmError(f'{len(failed)} trial(s) failed (rerun the same command to run only '
                         'these):\n  ' + '\n  '.join(failed))
    return [store.get(t.key) for t in trials]


# --------------------------------------------------------------------------- study tools
def add_launcher_args(parser: argparse.ArgumentParser) -> None:
    """``--launcher {local,pytorch,slurm}`` and the options of a trial's ranks and jobs."""
    group = parser.add_argument_group('launcher')
    group.add_argument('--launcher', choices=['local', 'pytorch', 'slurm'], default='local',
                       help='run trials in local processes (--workers), as torchrun ranks on '
                       'this machine (--tasks-per-trial), or as Slurm jobs')
    group.add_argument('--partition', default=None,
                       help='slurm: partition (None: the cluster default)')
    group.add_argument('--gpus-per-trial', type=int, default=0,
                       help='slurm: GPUs per trial, one rank each (--gres=gpu:G/N per node)')
    group.add_argument('--tasks-per-trial', type=int, default=None,
                       help='ranks per trial (slurm: srun tasks; pytorch: torchrun processes; '
                       'default: one per GPU, else 1 for slurm and 2 for pytorch)')
    group.add_argument('--nodes-per-trial', type=int, default=1,
                       help='slurm: nodes per trial (--tasks-per-trial a multiple of it)')
    group.add_argument('--cpus-per-task', '--cpus-per-trial', dest='cpus_per_task', type=int,
                       default=1, help='slurm: CPUs per rank (--cpus-per-task; keep --threads '
                       '<= it)')
    group.add_argument('--requeue', action='store_true',
                       help='on SIGTERM / SIGUSR1 a trial saves a checkpoint and stops; on Slurm '
                       'the job is requeueable, gets SIGUSR1 before its time limit and resumes')
    group.add_argument('--collect', nargs='+', metavar='WORK_DIR', default=None,
                       help='train nothing: take every trial from work dirs of tools/train.py '
                       '/ mim train runs (or folders holding them) and report on them; folders '
                       'that cannot be used are named with the reason')
    group.add_argument('--keep-checkpoints', action='store_true', default=None,
                       help="keep each trial's final checkpoint (default: kept on the real-data "
                       'tasks, deleted on the offline ones once the row is written)')
    group.add_argument('--sbatch-args', default='',
                       help='slurm: extra sbatch options, one string (write it with =, e.g. '
                       '--sbatch-args="--time=30 --qos=normal")')
    group.add_argument('--poll', type=float, default=5.0,
                       help='slurm: seconds between queue checks')
    group.add_argument('--gpu-tflops', type=float, default=DEFAULT_GPU_TFLOPS,
                       help='slurm --dry-run: sustained TFLOP/s per GPU the GPU-hour bill of '
                       'the real-data trials assumes')
    group.add_argument('--dry-run', action='store_true',
                       help='slurm: print the job script of the trials to run (and the GPU-hours '
                       'of the real-data tasks), submit nothing')


def launcher_from_args(args: argparse.Namespace, prog: str,
                       job_name: str = 'mmvitscale-study') -> Optional[Callable[..., Any]]:
    """The ``run_trials``-compatible launcher the arguments ask for (None: local pool)."""
    tasks = getattr(args, 'tasks_per_trial', None)
    if tasks is not None and tasks < 1:
        raise SystemExit(f'{prog}: error: --tasks-per-trial must be an integer >= 1, '
                         f'got {tasks}')
    requeue = getattr(args, 'requeue', False)
    keep = getattr(args, 'keep_checkpoints', None)
    if getattr(args, 'collect', None):
        from .collect import run_trials_collected
        for path in args.collect:
            if not osp.isdir(path):
                raise SystemExit(f'{prog}: error: --collect {path}: not a folder')
        return functools.partial(run_trials_collected, paths=list(args.collect))
    if args.launcher in ('local', 'pytorch'):
        if args.dry_run:
            raise SystemExit(f'{prog}: error: --dry-run needs --launcher slurm')
        if args.launcher == 'pytorch':
            return functools.partial(run_trials_torchrun, tasks=tasks or 2, requeue=requeue,
                                     keep_checkpoints=keep)
        if requeue or keep:
            from .pool import run_trials
            return functools.partial(run_trials, fn=functools.partial(
                run_trial, requeue=requeue, keep_checkpoints=keep))
        return None
    try:
        sbatch_args = shlex.split(args.sbatch_args)
    except ValueError as err:
        raise SystemExit(f'{prog}: error: --sbatch-args {args.sbatch_args!r}: {err}') from err
    opts = SlurmOptions(partition=args.partition, gpus_per_trial=args.gpus_per_trial,
                        cpus_per_task=args.cpus_per_task, sbatch_args=sbatch_args,
                        job_name=job_name, poll_s=args.poll, dry_run=args.dry_run,
                        tasks_per_trial=tasks, nodes_per_trial=args.nodes_per_trial,
                        requeue=requeue, keep_checkpoints=keep,
                        gpu_tflops=getattr(args, 'gpu_tflops', DEFAULT_GPU_TFLOPS))
    try:
        opts.check()
    except ValueError as err:
        raise SystemExit(f'{prog}: error: {err}') from err
    return functools.partial(run_trials_slurm, options=opts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 3 or argv[0] not in ('run', 'rank') or not argv[2].isdigit():
        print('usage: python -m mmvitscale.experiments.slurm run|rank MANIFEST INDEX',
              file=sys.stderr)
        return 2
    try:
        if argv[0] == 'run':
            run_manifest_task(argv[1], int(argv[2]))
        else:
            run_rank(argv[1], int(argv[2]))
    except Preempted as stop:
        return int(stop.code)
    return 0


if __name__ == '__main__':
    sys.exit(main())
