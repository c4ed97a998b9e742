"""Run trials on a local pool of worker processes, appending each result to the store.

Finished trials (their key in the store) are skipped, so rerunning a study after a crash
continues where it stopped (an unfinished trial resumes from its last checkpoint). The store's
out dir is held while trials run: a second study on it waits, then finds the trials done.
Each worker sets its torch threads before any trial; a trial's result depends on its seed
only, so 1 worker and N workers give the same rows (timings aside). Progress and an ETA are
printed as trials finish.
"""
import multiprocessing
import os
import os.path as osp
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Dict, List, Optional, Sequence

from .console import Eta
from .runner import Preempted, resumed_text
from .store import ResultStore, owning_study
from .trial import Trial, run_trial

Say = Callable[[str], None]


def default_say(msg: str) -> None:
    # the real stdout: a running trial redirects sys.stdout to its log file
    print(msg, file=sys.__stdout__, flush=True)


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the study process dies (a killed study
    must not leave workers training on, taking the cores of the rerun)."""
    if not sys.platform.startswith('linux'):
        return
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl: workers may outlive us
        return
    if os.getppid() == 1:  # the parent died before the signal was armed
        os._exit(1)


def init_worker(threads: int, worker: bool = False) -> None:
    if worker:
        _die_with_parent()
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran in this process
        pass


class Progress:
    """Counts finished trials and prints each with the time left (:class:`~.console.Eta`,
    one group per task)."""

    def __init__(self, pending: Sequence[Trial], say: Say, workers: int = 1) -> None:
        self.clock = Eta([t.task for t in pending], workers)
        self.say = say

    def eta(self) -> float:
        return self.clock.eta()

    def finished(self, trial: Trial, row: Dict[str, Any]) -> None:
        took = float(row['timings']['total_s'])
        count, times = self.clock.finished(trial.task, took)
        resumed = f' ({resumed_text(row["resumed"])})' if row.get('resumed') else ''
        self.say(f'{count} {trial}: {row["metric"]:.2f} {row["metric_unit"]} '
                 f'in {took:.1f}s{resumed}; {times}')


def run_trials(trials: Sequence[Trial], store: ResultStore, out_dir: str, data_root: str,
               workers: int = 1, threads: int = 1,
               fn: Callable[..., Dict[str, Any]] = run_trial,
               say: Optional[Say] = None) -> List[Dict[str, Any]]:
    """Run every trial not yet in ``store``; return the rows of ``trials`` in their order.

    Args:
        trials: the study's trials (duplicates run once).
        store: finished rows are appended as each trial finishes.
        out_dir, data_root: passed to ``fn`` (trial folders, prepared data).
        workers: processes; 1 runs in this process.
        threads: torch threads per worker (workers x threads <= cores keeps them busy
            without oversubscribing).
        fn: the trial runner, ``fn(trial, out_dir, data_root, threads) -> row``
            (a module-level function: workers import it).
        say: progress lines (default: stdout).
    """
    if workers < 1:
        raise ValueError(f'workers must be >= 1, got {workers}')
    if threads < 1:
        raise ValueError(f'threads must be >= 1, got {threads}')
    say = say or default_say
    with owning_study(osp.dirname(store.path), say=say):  # a second study waits for us
        store.reload()  # rows a study that held the out dir before us appended
        return _run_pending(trials, store, out_dir, data_root, workers, threads, fn, say)


def _run_pending(trials: Sequence[Trial], store: ResultStore, out_dir: str, data_root: str,
                 workers: int, threads: int, fn: Callable[..., Dict[str, Any]],
                 say: Say) -> List[Dict[str, Any]]:
    unique = list({t.key: t for t in trials}.values())
    pending = [t for t in unique if t.key not in store]
    say(f'{len(unique)} trials: {len(unique) - len(pending)} already in {store.path}, '
        f'{len(pending)} to run on {min(workers, max(1, len(pending)))} worker(s) x '
        f'{threads} thread(s)')
    progress = Progress(pending, say, workers)
    if workers == 1 or len(pending) <= 1:
        init_worker(threads)
        for trial in pending:
            try:
                row = fn(trial, out_dir, data_root, threads)
            except Preempted as stop:  # --requeue: checkpoint saved, the rerun resumes it
                say(f'{trial}: {stop}; the same command resumes it')
                raise
            store.append(row)
            progress.finished(trial, row)
    else:
        ctx = multiprocessing.get_context('spawn')  # no torch / mmengine state forked
        with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx,
                                 initializer=init_worker, initargs=(threads, True)) as pool:
            running = {pool.submit(fn, t, out_dir, data_root, threads): t for t in pending}
            try:
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        trial = running.pop(fut)
                        try:
                            row = fut.result()
                        except Exception as err:
                            raise RuntimeError(f'trial {trial} failed: {err}') from err
                        store.append(row)
                        progress.finished(trial, row)
            except BaseException:
                for fut in running:
                    fut.cancel()
                raise
    return [store.get(t.key) for t in trials]
