"""Seeded arm studies: every arm trained once per seed, with the same seeds (paired design).

The pieces the single-task study tools (``tools/analysis/castling_accuracy.py``,
``tools/analysis/retokenization_study.py``) share; the statistics are those of
:mod:`mmvitscale.experiments.stats` (``docs/studies.md``):

* :func:`check_seeds`: the seed list, validated before any work;
* :func:`run_arms`: (arm, seed) trials, seed-major (every arm of a seed finishes before the
  next seed starts, so a partial study already has paired seeds), each kept in a
  :class:`~mmvitscale.experiments.store.ResultStore` as it finishes and skipped when rerun,
  with a console line per trial (its metrics, time, and the study's ETA);
* :func:`summarize_arms`: per arm the per-seed values, mean and 95% Student-t interval; per
  comparison the per-seed paired differences (or relative savings), their mean, 95% interval,
  paired t p-value and verdict word, and a sentence saying it;
* :func:`arms_markdown` and :func:`plot_arms`: the same numbers as tables, sentences and a PNG
  with error bars.
"""
import hashlib
import json
import math
import os.path as osp
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import seed_list_error
from ..fileio import pyplot, save_figure
from . import stats
from .console import Eta
from .report import corrected, family_bar, json_safe, machine_summary
from .store import ResultStore, owning_study
from .tasks import ROOT

Say = Callable[[str], None]
STORE_NAME = 'trials.jsonl'


def check_seeds(seeds: Sequence[int], flag: str = '--seeds') -> List[int]:
    """The seeds as a list; ``ValueError`` naming ``flag`` and the value unless they are
    distinct integers >= 0 (at least one)."""
    problem = seed_list_error(seeds)
    if problem:
        raise ValueError(f'{flag} {problem}')
    return list(seeds)


def rel_path(path: str) -> str:
    """``path`` relative to the repository root (absolute when outside it), for reports."""
    rel = osp.relpath(osp.abspath(path), ROOT)
    return osp.abspath(path) if rel.startswith('..') else rel


def trial_key(study: str, arm: str, seed: int, settings: Mapping[str, Any]) -> str:
    """Hash of everything that decides an (arm, seed) trial's result."""
    blob = json.dumps(dict(study=study, arm=arm, seed=seed, settings=settings),
                      sort_keys=True, separators=(',', ':'), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def file_digest(path: str) -> str:
    """First 12 hex digits of the sha256 of a file (a config or rule in a trial key)."""
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def run_arms(study: str, arms: Sequence[str], seeds: Sequence[int],
             settings: Callable[[str], Mapping[str, Any]],
             run_one: Callable[[str, int], Dict[str, Any]], out_dir: str,
             say: Optional[Say] = None,
             on_row: Optional[Callable[[List[Dict[str, Any]]], None]] = None
             ) -> List[Dict[str, Any]]:
    """Run every (arm, seed) trial not yet in ``<out_dir>/trials.jsonl``; return all rows.

    ``settings(arm)``: what decides that arm's result besides the seed (part of the key);
    ``run_one(arm, seed)``: train and evaluate, return a row with a ``metrics`` dict.
    Rows are appended to the store as they finish (``on_row(rows so far)`` after each), and
    ``say`` gets one line per trial run: ``[k/n] arm seed s: metrics in t s; elapsed, ETA``
    (:class:`~mmvitscale.experiments.console.Eta`, one group per arm).
    """
    say = say or (lambda msg: None)
    with owning_study(out_dir, say=say):  # one study per out dir: a second waits for us
        return _run_arms(study, arms, seeds, settings, run_one, out_dir, say, on_row)


def _run_arms(study: str, arms: Sequence[str], seeds: Sequence[int],
              settings: Callable[[str], Mapping[str, Any]],
              run_one: Callable[[str, int], Dict[str, Any]], out_dir: str, say: Say,
              on_row: Optional[Callable[[List[Dict[str, Any]]], None]]
              ) -> List[Dict[str, Any]]:
    store = ResultStore(osp.join(out_dir, STORE_NAME))
    plan = [(arm, seed, trial_key(study, arm, seed, settings(arm)))
            for seed in seeds for arm in arms]
    kept = sum(key in store for _, _, key in plan)
    say(f'{len(plan)} trials ({len(arms)} arm(s) x {len(seeds)} seed(s)): {kept} already in '
        f'{store.path}, {len(plan) - kept} to run')
    clock = Eta([arm for arm, _, key in plan if key not in store])
    rows: List[Dict[str, Any]] = []
    for arm, seed, key in plan:
        row = store.get(key)
        if row is None:
            t0 = time.perf_counter()
            row = dict(run_one(arm, seed), key=key, study=study, arm=arm, seed=seed,
                       settings=dict(settings(arm)))
            store.append(json_safe(row))
            row = store.get(key)
            took = time.perf_counter() - t0
            count, times = clock.finished(arm, took)
            metrics = ', '.join(f'{k} {v:.2f}' if isinstance(v, float) else f'{k} {v}'
                                for k, v in row.get('metrics', {}).items())
            say(f'{count} {arm} seed {seed}: {metrics} in {took:.1f}s; {times}')
        rows.append(row)
        if on_row:
            on_row(list(rows))
    return rows


def complete_seeds(rows: Sequence[Mapping[str, Any]], arms: Sequence[str],
                   seeds: Sequence[int]) -> List[int]:
    """The seeds (in order) for which every arm has a row: a partial study's paired seeds."""
    have = {(r['arm'], r['seed']) for r in rows}
    return [s for s in seeds if all((a, s) in have for a in arms)]


# ---------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class Metric:
    """A per-seed value of every row (``row['metrics'][key]``) and how arms are compared on it.

    ``kind='difference'``: per seed ``arm - baseline`` in ``unit``; ``'saving'``: per seed
    ``100 * (baseline - arm) / baseline`` (percent saved, for times). Either way a positive
    difference is ``better`` when its interval lies above 0.
    """

    key: str
    label: str
    unit: str = 'points'
    kind: str = 'difference'
    digits: int = 2
    compare_label: Optional[str] = None  # in comparison sentences (default: ``label``)


def _pair(values: Mapping[int, float], base: Mapping[int, float], seeds: Sequence[int],
          metric: Metric) -> List[float]:
    if metric.kind == 'difference':
        return stats.paired_differences([values[s] for s in seeds], [base[s] for s in seeds])
    if metric.kind == 'saving':
        return [100.0 * (base[s] - values[s]) / base[s] if base[s] > 0 else math.nan
                for s in seeds]
    raise ValueError(f"metric {metric.key}: kind must be 'difference' or 'saving', "
                     f'got {metric.kind!r}')


def _fmt(v: Optional[float], digits: int = 2, sign: bool = True) -> str:
    if v is None or not math.isfinite(v):
        return 'n/a'
    return f'{v:+.{digits}f}' if sign else f'{v:.{digits}f}'


def comparison_sentence(c: Mapping[str, Any]) -> str:
    """``"linear-angular vs softmax: -0.80 points, 95% interval -2.10 to +0.50: inconclusive"``;
    with one seed: the difference and that no interval (so no verdict) can be computed."""
    d, unit = c['digits'], c['unit']
    unit_text = '%' if unit == '%' else f' {unit}'
    head = f"{c['label']} vs {c['baseline_label']}"
    if c.get('metric_label'):
        head += f", {c['metric_label']}"
    lo, hi = c['ci95']
    if lo is None or hi is None:
        n = len(c['seeds'])
        return (f"{head}: {_fmt(c['diff_mean'], d)}{unit_text} from {n} seed"
                f"{'s' if n != 1 else ''}: no interval can be computed (no verdict)")
    pct = '' if unit != '%' else '%'
    text = (f"{head}: {_fmt(c['diff_mean'], d)}{unit_text}, {c['confidence']:.0%} interval "
            f"{_fmt(lo, d)} to {_fmt(hi, d)}{pct}")
    if corrected(c):
        flo, fhi = c['ci_family']
        text += (f"; {stats.percent(c['family_confidence'])} over the {c['family_size']} "
                 f"comparisons ({c['correction'].capitalize()}) {_fmt(flo, d)} to "
                 f"{_fmt(fhi, d)}{pct}")
    return f"{text}: {c['verdict']}"


def summarize_arms(rows: Sequence[Mapping[str, Any]], arms: Sequence[str], seeds: Sequence[int],
                   comparisons: Sequence[Tuple[str, str]], metrics: Sequence[Metric],
                   labels: Optional[Mapping[str, str]] = None, confidence: float = 0.95,
                   correction: str = 'bonferroni',
                   meta: Optional[Mapping[str, Any]] = None,
                   trial_rows: Optional[Sequence[Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """Arms and paired comparisons of a seeded study, as strict-JSON-ready data.

    Args:
        rows: one per (arm, seed) with ``arm``, ``seed`` and a ``metrics`` dict (extra keys
            are kept in the arm's ``per_seed`` entries).
        arms, seeds: the study's arms and seeds (every pair must have a row).
        comparisons: ``(arm, baseline)`` pairs, compared on every metric in ``metrics``.
        metrics: the first is the arm's headline value (``metrics`` / ``mean`` / ``ci95``);
            every metric gets a ``summaries`` entry per arm.
        labels: display names of the arms (default: the arm names).
        trial_rows: the rows of the trials that ran, for the machine summary (default: ``rows``;
            differs when some rows are derived, e.g. a model converted after training).
        correction: ``'bonferroni'``: per metric, the verdicts follow intervals that hold
            together for all ``comparisons`` (:func:`mmvitscale.experiments.stats.compare`);
            ``'none'``: each its own ``confidence`` interval.
    """
    if not metrics:
        raise ValueError('summarize_arms needs at least one metric')
    stats.family_confidence(confidence, 1, correction)  # bad arguments fail before any work
    labels = dict(labels or {})
    by: Dict[str, Dict[int, Mapping[str, Any]]] = {}
    for r in rows:
        by.setdefault(r['arm'], {})[r['seed']] = r
    missing = [f'{a}/seed{s}' for a in arms for s in seeds if s not in by.get(a, {})]
    if missing:
        raise ValueError(f'no result for {len(missing)} trial(s): {", ".join(missing[:4])}')
    primary = metrics[0]
    out_arms: List[Dict[str, Any]] = []
    for arm in arms:
        per = by[arm]
        summaries = {}
        for m in metrics:
            vals = [float(per[s]['metrics'][m.key]) for s in seeds]
            iv = stats.t_interval(vals, confidence)
            summaries[m.key] = dict(label=m.label, values=vals, mean=iv.mean,
                                    ci95=[iv.low, iv.high], half_width=iv.half_width, sd=iv.sd)
        head = summaries[primary.key]
        out_arms.append(dict(
            arm=arm, label=labels.get(arm, arm), seeds=list(seeds), metric=primary.key,
            metric_label=primary.label, metrics=head['values'], mean=head['mean'],
            ci95=head['ci95'], half_width=head['half_width'], sd=head['sd'],
            summaries=summaries,
            per_seed=[dict({k: v for k, v in per[s].items()
                            if k not in ('arm', 'key', 'study', 'settings', 'machine')},
                           seed=s) for s in seeds]))
    out_comps: List[Dict[str, Any]] = []
    for arm, base in comparisons:
        for i, m in enumerate(metrics):
            vals = {s: float(by[arm][s]['metrics'][m.key]) for s in seeds}
            base_vals = {s: float(by[base][s]['metrics'][m.key]) for s in seeds}
            diffs = _pair(vals, base_vals, seeds, m)
            c = dict(arm=arm, baseline=base, label=labels.get(arm, arm),
                     baseline_label=labels.get(base, base), metric=m.key,
                     metric_label=None if i == 0 else (m.compare_label or m.label),
                     unit=m.unit, kind=m.kind, digits=m.digits, seeds=list(seeds),
                     diffs=diffs, confidence=confidence,
                     **stats.compare(diffs, confidence, len(comparisons), correction,
                                     unit=m.unit, digits=m.digits))
            c = json_safe(c)
            c['sentence'] = comparison_sentence(c)
            out_comps.append(c)
    return json_safe(dict(meta=dict(meta or {}), seeds=list(seeds), arms=out_arms,
                          comparisons=out_comps, confidence=confidence,
                          metrics=[dict(key=m.key, label=m.label, unit=m.unit, kind=m.kind,
                                        compare_label=m.compare_label or m.label)
                                   for m in metrics],
                          machine=machine_summary(rows if trial_rows is None
                                                  else trial_rows)))


def arm(summary: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The summary's entry of arm ``name``."""
    return next(a for a in summary['arms'] if a['arm'] == name)


# ---------------------------------------------------------------------------- markdown / png
def arms_markdown(summary: Mapping[str, Any], extra: Sequence[Tuple[str, str, int]] = ()
                  ) -> List[str]:
    """Markdown lines: the arms table (mean, 95% interval, per seed of every metric, then
    ``extra`` ``(key in the rows' metrics, column title, digits)`` means) and the comparison
    sentences."""
    metrics = summary['metrics']
    seeds = summary['seeds']
    cols = ''.join(f"{m['label']}: mean | 95% interval | per seed | " for m in metrics)
    head = ('| arm | ' + cols + ''.join(f'{t} (mean) | ' for _, t, _ in extra)).rstrip()
    lines = [head, '|---|' + '---:|---|---|' * len(metrics) + '---:|' * len(extra)]
    for a in summary['arms']:
        cells = []
        for m in metrics:
            s = a['summaries'][m['key']]
            lo, hi = s['ci95']
            cells.append(f"{_fmt(s['mean'], sign=False)} | "
                         + (f'{_fmt(lo, sign=False)} to {_fmt(hi, sign=False)}'
                            if lo is not None else 'n/a (one seed)')
                         + ' | ' + ', '.join(f'{v:.2f}' for v in s['values']))
        for key, _, digits in extra:
            vals = [p['metrics'][key] for p in a['per_seed']
                    if p.get('metrics', {}).get(key) is not None]
            cells.append(_fmt(sum(vals) / len(vals), digits, sign=False) if vals else 'n/a')
        lines.append(f"| {a['label']} | " + ' | '.join(cells) + ' |')
    lines += ['', f"## Comparisons (paired per seed, seeds {seeds})", '']
    lines += [f"- {c['sentence']}" for c in summary['comparisons']]
    points = [c for c in summary['comparisons'] if c['unit'] == 'points']
    hws = [c.get('verdict_half_width', c['half_width']) for c in points]
    hws = [h for h in hws if h is not None]
    level = stats.percent(points[0].get('family_confidence', 0.95)) if points else '95%'
    lines += ['', 'Power: ' + stats.power_text(
        max(hws) if hws else math.nan, 'points', len(seeds),
        f"{level} interval half-width, what the verdicts follow") + '.']
    return lines


def plot_arms(summary: Mapping[str, Any], path: str, title: str = '') -> None:
    """Per metric: arm means with 95% error bars and the per-seed values (left), paired
    differences / savings with 95% error bars, coloured by verdict (right)."""
    plt = pyplot()
    metrics = summary['metrics']
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 2.2 + 1.0 * len(summary['arms'])
                                                       * len(metrics)), squeeze=False)
    for (left, right), m in zip(axes, metrics):
        arms = summary['arms']
        for y, a in enumerate(arms):
            s = a['summaries'][m['key']]
            lo, hi = s['ci95']
            err = [[s['mean'] - lo], [hi - s['mean']]] if lo is not None else None
            left.errorbar(s['mean'], y, xerr=err, fmt='o', capsize=4, color='tab:blue')
            left.scatter(s['values'], [y] * len(s['values']), s=10, color='0.5', zorder=3)
        left.set_yticks(range(len(arms)), [a['label'] for a in arms], fontsize=8)
        left.set_xlabel(f"{m['label']} (mean, 95% interval, seeds)")
        left.grid(alpha=0.3)
        left.margins(y=0.3)
        comps = [c for c in summary['comparisons'] if c['metric'] == m['key']]
        for y, c in enumerate(comps):
            lo, hi = c['ci95']
            err = [[c['diff_mean'] - lo], [hi - c['diff_mean']]] if lo is not None else None
            color = dict(better='tab:green', worse='tab:red').get(c['verdict'], '0.3')
            right.errorbar(c['diff_mean'], y, xerr=err, fmt='s', capsize=4, color=color)
            family_bar(right, c, y)
            right.scatter(c['diffs'], [y] * len(c['diffs']), s=10, color='0.5', zorder=3)
        right.axvline(0, color='k', lw=0.8)
        right.set_yticks(range(len(comps)),
                         [f"{c['label']} vs {c['baseline_label']}" for c in comps], fontsize=8)
        what = 'saved, %' if m['kind'] == 'saving' else f"difference, {m['unit']}"
        right.set_xlabel(f"{m['compare_label']} ({what}, 95% interval"
                         + ('; thin: the verdict\'s family-wise interval)'
                            if any(corrected(c) for c in comps) else ')'))
        right.grid(alpha=0.3)
        right.margins(y=0.3)
        right.set_title('; '.join(f"{c['label']}: {c['verdict']}" for c in comps), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def few_seeds_note(seeds: Sequence[int]) -> List[str]:
    """Markdown lines warning that fewer than 3 seeds give wide (or no) intervals."""
    if len(seeds) >= 3:
        return []
    return ['', f'{len(seeds)} seed(s): intervals from fewer than 3 seeds are wide (or absent); '
            'run `--seeds 0 1 2` or more before reading a verdict.']


def write_seeded_report(summary: Mapping[str, Any], out_dir: str, name: str, markdown: str,
                        plot_title: str) -> Dict[str, str]:
    """``<name>.json``, ``.md`` (``markdown``) and ``.png`` (arms with error bars) under
    ``out_dir``, each written atomically."""
    from .report import write_json, write_markdown
    paths = {ext: osp.join(out_dir, f'{name}.{ext}') for ext in ('json', 'md', 'png')}
    write_json(paths['json'], summary)
    write_markdown(paths['md'], markdown)
    plot_arms(summary, paths['png'], plot_title)
    return paths
