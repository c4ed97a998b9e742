"""Batch-1 latency of each arm's backbone on each backend, with its round-to-round spread.

Latency does not depend on the trained weights, so each (task, rule) is built from its config
and timed in the main process after training (never beside a training worker). The arms of a
task are timed in alternating rounds, so a load change on a shared machine hits them alike;
an arm's latency is the median of its round medians and the spread of the round medians is
the noise floor. Rows go to the study's store (``kind='latency'``), so a rerun reuses them and
writes the same report.
"""
import hashlib
import json
import statistics
from typing import Any, Dict, List, Optional, Sequence

from .pool import Say, default_say
from .store import ResultStore, machine_fingerprint
from .tasks import get_task, input_shape
from .trial import config_digest, rule_digest, rule_label


def latency_key(task: str, rule: str, backend: str, rounds: int, repeats: int,
                threads: int) -> str:
    config_sha = config_digest(get_task(task).config_path, rule)
    ident = dict(kind='latency', task=task, rule=rule_label(rule), rule_sha=rule_digest(rule),
                 config_sha=config_sha, backend=backend, rounds=rounds, repeats=repeats,
                 threads=threads)
    blob = json.dumps(ident, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def available_backends(wanted: Sequence[str]) -> List[str]:
    """The backends of ``wanted`` that can run on this machine's CPU (others are reported)."""
    from ..cost.backends import check_backend
    out = []
    for b in wanted:
        try:
            check_backend(b, 'cpu')
            out.append(b)
        except ValueError:
            continue
    return out


def measure_arms(tasks: Sequence[str], rules: Sequence[str], store: ResultStore,
                 backends: Sequence[str] = ('eager',), rounds: int = 3, repeats: int = 20,
                 warmup_s: float = 0.2, threads: int = 1,
                 say: Optional[Say] = None) -> List[Dict[str, Any]]:
    """Latency rows of every (task, rule, backend); returns all of them.

    Rows already in ``store`` are reused only when every arm of the (task, backend) has one:
    when any is missing (a rule added to a finished study), all arms are timed again together,
    so the arms compared are always timed in the same alternating rounds.
    """
    import torch

    from ..cost.backends import build_model, measure
    from ..engine.config import load_with_rule
    if rounds < 1 or repeats < 1:
        raise ValueError(f'latency rounds and repeats must be >= 1, got {rounds}, {repeats}')
    say = say or default_say
    torch.set_num_threads(threads)
    out = []
    for task in tasks:
        spec = get_task(task)
        for backend in backends:
            keys = {r: latency_key(task, r, backend, rounds, repeats, threads) for r in rules}
            new = [r for r in rules if keys[r] not in store]
            todo = list(rules) if new else []
            if todo:
                again = f' ({len(new)} new, all timed together)' if len(new) < len(todo) else ''
                say(f'{task}: {backend} latency of {len(todo)} arm(s){again}, {rounds} rounds x '
                    f'{repeats} runs')
                models = {}
                for r in todo:
                    cfg = load_with_rule(spec.config_path, r)
                    models[r] = (build_model(cfg.model.backbone), input_shape(spec, cfg))
                medians: Dict[str, List[float]] = {r: [] for r in todo}
                for _ in range(rounds):
                    for r, (model, shape) in models.items():
                        res = measure(model, shape, backend=backend, warmup_s=warmup_s,
                                      repeats=repeats)
                        medians[r].append(res['median_ms'])
                for r in todo:
                    m = medians[r]
                    store.append(dict(
                        key=keys[r], kind='latency', task=task, rule=rule_label(r),
                        backend=backend, batch_size=1, input_shape=list(models[r][1]),
                        median_ms=statistics.median(m), round_min_ms=min(m),
                        round_max_ms=max(m), rounds=rounds, repeats=repeats,
                        machine=machine_fingerprint()))
            out += [store.get(keys[r]) for r in rules]
    return out
