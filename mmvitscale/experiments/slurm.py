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

from .pool import Progress, Say, _default_say, _init_worker
from .store import ResultStore
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
    """How trials are submitted: partition, resources per trial, extra ``#SBATCH`` options."""

    partition: Optional[str] = None
    gpus_per_trial: int = 0
    cpus_per_trial: int = 1
    sbatch_args: Sequence[str] = field(default_factory=tuple)
    job_name: str = 'mmvitscale-study'
    python: str = sys.executable
    poll_s: float = 5.0
    dry_run: bool = False

    def check(self) -> None:
        if self.gpus_per_trial < 0:
            raise ValueError(f'--gpus-per-trial must be >= 0, got {self.gpus_per_trial}')
        if self.cpus_per_trial < 1:
            raise ValueError(f'--cpus-per-trial must be >= 1, got {self.cpus_per_trial}')
        if self.poll_s <= 0:
            raise ValueError(f'--poll must be > 0, got {self.poll_s}')


# --------------------------------------------------------------------------- job side
def _trial_from(entry: Dict[str, Any]) -> Trial:
    opts = tuple(sorted((k, v) for k, v in entry['options'].items()))
    trial = Trial(entry['task'], entry['rule'], int(entry['seed']), opts)
    if trial.key != entry['key']:
        raise SlurmError(f'{trial}: key {trial.key} differs from the submitted '
                         f'{entry["key"]} (was the rule file edited after submission?)')
    return trial


def run_manifest_task(manifest: str, index: int) -> str:
    """Run trial ``index`` of a submission's manifest; returns the row file written."""
    with open(manifest) as f:
        man = json.load(f)
    trial = _trial_from(man['trials'][index])
    _init_worker(man['threads'])
    row = run_trial(trial, man['out_dir'], man['data_root'], man['threads'])
    path = osp.join(trial_dir(man['out_dir'], trial), ROW)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(row, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # the controller never sees half a row
    print(f'{trial}: {row["metric"]:.2f} {row["metric_unit"]} -> {path}', flush=True)
    return path


# --------------------------------------------------------------------------- controller side
def job_script(manifest: str, n: int, log_dir: str, opts: SlurmOptions, threads: int) -> str:
    """The sbatch script of one submission (an array of ``n`` trials)."""
    import mmvitscale
    pkg_parent = osp.dirname(osp.dirname(osp.abspath(mmvitscale.__file__)))
    lines = ['#!/usr/bin/env bash',
             f'#SBATCH --job-name={opts.job_name}',
             f'#SBATCH --array=0-{n - 1}',
             '#SBATCH --ntasks=1',
             f'#SBATCH --cpus-per-task={opts.cpus_per_trial}',
             f'#SBATCH --output={osp.join(log_dir, "%A_%a.log")}']
    if opts.partition:
        lines.append(f'#SBATCH --partition={opts.partition}')
    if opts.gpus_per_trial > 0:
        lines.append(f'#SBATCH --gres=gpu:{opts.gpus_per_trial}')
    lines += [f'#SBATCH {arg}' for arg in opts.sbatch_args]
    lines += ['set -euo pipefail',
              f'export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}',
              f'export PYTHONPATH={shlex.quote(pkg_parent)}${{PYTHONPATH:+:$PYTHONPATH}}',
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
        return None
    os.makedirs(sub_dir, exist_ok=True)
    entries = [dict(key=t.key, task=t.task, rule=t.rule, seed=t.seed, options=t.opts)
               for t in pending]
    with open(manifest, 'w') as f:
        json.dump(dict(out_dir=out_dir, data_root=data_root, threads=threads,
                       trials=entries), f, indent=1)
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
        f'(partition {opts.partition or "default"}, {opts.cpus_per_trial} CPU(s)'
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
    threads per trial (keep it <= ``cpus_per_trial``).
    """
    opts = options or SlurmOptions()
    opts.check()
    say = say or _default_say
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


# --------------------------------------------------------------------------- study tools
def add_launcher_args(parser: argparse.ArgumentParser) -> None:
    """``--launcher {local,slurm}`` and the Slurm options, for a study tool's parser."""
    group = parser.add_argument_group('launcher')
    group.add_argument('--launcher', choices=['local', 'slurm'], default='local',
                       help='run trials in local processes (--workers) or as Slurm jobs')
    group.add_argument('--partition', default=None,
                       help='slurm: partition (None: the cluster default)')
    group.add_argument('--gpus-per-trial', type=int, default=0,
                       help='slurm: GPUs per trial (--gres=gpu:N; 0 requests none)')
    group.add_argument('--cpus-per-trial', type=int, default=1,
                       help='slurm: CPUs per trial (--cpus-per-task; keep --threads <= it)')
    group.add_argument('--sbatch-args', default='',
                       help='slurm: extra sbatch options, one string (write it with =, e.g. '
                       '--sbatch-args="--time=30 --qos=normal")')
    group.add_argument('--poll', type=float, default=5.0,
                       help='slurm: seconds between queue checks')
    group.add_argument('--dry-run', action='store_true',
                       help='slurm: print the job script of the trials to run, submit nothing')


def launcher_from_args(args: argparse.Namespace, prog: str,
                       job_name: str = 'mmvitscale-study') -> Optional[Callable[..., Any]]:
    """The ``run_trials``-compatible launcher the arguments ask for (None: local pool)."""
    if args.launcher == 'local':
        if args.dry_run:
            raise SystemExit(f'{prog}: error: --dry-run needs --launcher slurm')
        return None
    try:
        sbatch_args = shlex.split(args.sbatch_args)
    except ValueError as err:
        raise SystemExit(f'{prog}: error: --sbatch-args {args.sbatch_args!r}: {err}') from err
    opts = SlurmOptions(partition=args.partition, gpus_per_trial=args.gpus_per_trial,
                        cpus_per_trial=args.cpus_per_trial, sbatch_args=sbatch_args,
                        job_name=job_name, poll_s=args.poll, dry_run=args.dry_run)
    try:
        opts.check()
    except ValueError as err:
        raise SystemExit(f'{prog}: error: {err}') from err
    return functools.partial(run_trials_slurm, options=opts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 3 or argv[0] != 'run' or not argv[2].isdigit():
        print('usage: python -m mmvitscale.experiments.slurm run MANIFEST INDEX',
              file=sys.stderr)
        return 2
    run_manifest_task(argv[1], int(argv[2]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
