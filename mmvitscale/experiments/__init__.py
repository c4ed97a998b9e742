"""Experiments layer: tasks, trials, a resumable results store, a local worker pool,
statistics (intervals, paired differences, verdicts, Kendall tau) and report writers.

Study tools are thin shells over :func:`~mmvitscale.experiments.study.run_grid_study` and the
pieces below; ``docs/studies.md`` has the norms they follow.
"""
from .pool import run_trials
from .report import summarize, to_markdown, write_json, write_report
from .stats import (Interval, KendallResult, kendall_tau, paired_interval, paired_t_test,
                    power_text, ranks, t_interval, verdict)
from .store import ResultStore, StoreError, machine_fingerprint
from .study import plan_grid, prepare_data, run_grid_study
from .tasks import TASKS, TaskError, TaskSpec, get_task, register_task
from .trial import Trial, make_trial, run_trial

__all__ = ['Interval', 'KendallResult', 'ResultStore', 'StoreError', 'TASKS', 'TaskError',
           'TaskSpec', 'Trial', 'get_task', 'kendall_tau', 'machine_fingerprint', 'make_trial',
           'paired_interval', 'paired_t_test', 'plan_grid', 'power_text', 'prepare_data',
           'ranks', 'register_task', 'run_grid_study', 'run_trial', 'run_trials', 'summarize',
           't_interval', 'to_markdown', 'verdict', 'write_json', 'write_report']
