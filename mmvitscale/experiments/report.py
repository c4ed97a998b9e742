"""A study's summary (arms, paired comparisons, rank agreement) and its JSON / Markdown / PNG.

:func:`summarize` is a pure function of the store's rows and the study definition, so a
study rerun after a crash writes the same bytes. The words follow the intervals
(``docs/studies.md``): a rule *beats the baseline* / *transferred* only when the interval of
its paired difference lies above 0, *worse* / *reversed* when below, else *inconclusive*.
"""
import json
import math
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..fileio import atomic_write, pyplot, save_figure
from . import stats

SOURCE_WORDS = dict(better='beats the baseline', worse='worse than the baseline',
                    inconclusive='inconclusive')
TARGET_WORDS = dict(better='transferred to', worse='reversed on', inconclusive='inconclusive on')


def json_safe(obj: Any) -> Any:
    """``nan`` / ``inf`` -> ``None`` and tuples -> lists, recursively (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str, obj: Any) -> None:
    """Strict, indented JSON, atomically."""
    atomic_write(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + '\n')


def write_markdown(path: str, text: str) -> None:
    atomic_write(path, text if text.endswith('\n') else text + '\n')


def _fmt(v: Optional[float], digits: int = 2, sign: bool = True) -> str:
    if v is None or not math.isfinite(v):
        return 'n/a'
    return f'{v:+.{digits}f}' if sign else f'{v:.{digits}f}'


# ---------------------------------------------------------------------------- summary
def _by_arm(rows: Sequence[Mapping[str, Any]]) -> Dict[tuple, Dict[int, Mapping[str, Any]]]:
    arms: Dict[tuple, Dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        arms.setdefault((row['task'], row['rule']), {})[row['seed']] = row
    return arms


def machine_summary(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Machines, torch versions, threads and load over the rows (as recorded per trial)."""
    machines = [r.get('machine', {}) for r in rows]
    loads = [m['loadavg'][0] for m in machines if m.get('loadavg')]
    return dict(cpu=sorted({str(m.get('cpu')) for m in machines}),
                torch=sorted({str(m.get('torch')) for m in machines}),
                threads=sorted({int(m.get('threads') or 0) for m in machines}),
                loadavg_1min=[min(loads), max(loads)] if loads else None,
                trials=len(rows),
                trial_seconds=sum(r.get('timings', {}).get('total_s', 0.0) for r in rows))


def summarize(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str], rules: Sequence[str],
              baseline: str, seeds: Sequence[int], source: Optional[str] = None,
              tolerance: float = 0.15, confidence: float = 0.95,
              correction: str = 'bonferroni',
              meta: Optional[Mapping[str, Any]] = None,
              latency: Sequence[Mapping[str, Any]] = (),
              not_applicable: Optional[Mapping[str, Mapping[str, str]]] = None,
              matches: Optional[Mapping[str, Mapping[str, Mapping[str, Any]]]] = None,
              match: str = 'none', draws: int = 2000) -> Dict[str, Any]:
    """Arms, paired comparisons to ``baseline``, the winner and rank agreement of a study.

    Args:
        rows: store rows of the study's trials (one per task, rule label, seed).
        tasks, rules, seeds: the study's grid (rule labels, the baseline among them).
        source: the task the rules are chosen on (default: the first task); rank agreement
            is Kendall tau between the arms' means on ``source`` and on each other task.
        tolerance: equal cost = backbone FLOPs within this fraction of the baseline's; the
            latency budget is the baseline's latency plus this fraction.
        correction: ``'bonferroni'``: on each task, the verdicts follow intervals that hold
            together for all the rules compared with the baseline there (the study picks a
            winner among them; :func:`mmvitscale.experiments.stats.compare`); ``'none'``:
            each verdict follows its own ``confidence`` interval.
        latency: latency rows (:func:`mmvitscale.experiments.latency.measure_arms`); the
            first backend decides ``within_latency_budget``.
        not_applicable: ``{task: {rule: reason}}``: arms that cannot be built (a rule that
            would leave a PiT stage without blocks); they have no trials, and rank agreement
            uses the rules both tasks have.
        matches: ``{task: {rule: Match.as_dict()}}`` (:mod:`mmvitscale.cost.matching`): each
            rule re-matched to the task baseline's cost by ``match`` (``'flops'`` or
            ``'latency'``); ``'none'``: the rule files as written, ``matched`` when the FLOPs
            are within ``tolerance``. Each comparison gets ``cost_ratio`` and ``matched``.
        draws: bootstrap draws of the effect-transfer intervals
            (:func:`mmvitscale.experiments.stats.effect_transfer`).
    """
    if baseline not in rules:
        raise ValueError(f'baseline {baseline!r} is not among the rules {list(rules)}')
    source = source or tasks[0]
    arms_rows = _by_arm(rows)
    skip = {t: dict(v) for t, v in (not_applicable or {}).items()}
    if any(baseline in v for v in skip.values()):
        raise ValueError(f'the baseline {baseline!r} must apply to every task')
    missing = [f'{t}/{r}/seed{s}' for t in tasks for r in rules for s in seeds
               if r not in skip.get(t, {}) and s not in arms_rows.get((t, r), {})]
    if missing:
        raise ValueError(f'the store lacks {len(missing)} trials of the study, e.g. '
                         f'{", ".join(missing[:3])}')
    lat: Dict[tuple, Dict[str, Dict[str, float]]] = {}
    backends: List[str] = []
    for r in latency:
        backends += [r['backend']] if r['backend'] not in backends else []
        lat.setdefault((r['task'], r['rule']), {})[r['backend']] = dict(
            median_ms=r['median_ms'], round_min_ms=r['round_min_ms'],
            round_max_ms=r['round_max_ms'], noise_ms=r['round_max_ms'] - r['round_min_ms'])
    arms: List[Dict[str, Any]] = []
    comparisons: List[Dict[str, Any]] = []
    means: Dict[str, Dict[str, float]] = {}
    stats.family_confidence(confidence, 1, correction)  # bad arguments fail before any work
    for task in tasks:
        family = sum(1 for r in rules if r != baseline and r not in skip.get(task, {}))
        base_rows = arms_rows[(task, baseline)]
        base_vals = [base_rows[s]['metric'] for s in seeds]
        base_flops = base_rows[seeds[0]]['cost']['gflops']
        unit = base_rows[seeds[0]].get('metric_unit', 'points')
        for rule in rules:
            if rule in skip.get(task, {}):
                continue
            per_seed = arms_rows[(task, rule)]
            vals = [per_seed[s]['metric'] for s in seeds]
            first = per_seed[seeds[0]]
            iv = stats.t_interval(vals, confidence)
            ratio = first['cost']['gflops'] / base_flops if base_flops > 0 else math.nan
            means.setdefault(task, {})[rule] = iv.mean
            arms.append(dict(
                task=task, rule=rule, rule_file=first.get('rule_file'),
                scaling=first.get('scaling'), seeds=list(seeds), metrics=vals,
                metric_name=first.get('metric_name'), metric_unit=unit, mean=iv.mean,
                ci95=[iv.low, iv.high], half_width=iv.half_width, sd=iv.sd,
                gflops=first['cost']['gflops'], params_m=first['cost']['params_m'],
                flops_ratio=ratio, input_shape=first.get('input_shape'),
                train_s_mean=sum(per_seed[s]['timings']['train_s'] for s in seeds) / len(seeds),
                latency=lat.get((task, rule), {})))
            if rule == baseline:
                continue
            diffs = stats.paired_differences(vals, base_vals)
            cost = _cost_view((matches or {}).get(task, {}).get(rule), match, ratio, tolerance,
                              rule, task)
            arms[-1]['match'] = cost['match']
            comparisons.append(dict(
                task=task, rule=rule, baseline=baseline, seeds=list(seeds), diffs=diffs,
                **stats.compare(diffs, confidence, family, correction, unit='points'),
                flops_ratio=ratio, equal_cost=cost['matched'], **cost,
                metric_unit=unit,
                **_latency_view(lat, task, rule, baseline, backends, tolerance)))
    rank_agreement = []
    for task in tasks:
        if task == source:
            continue
        both = [r for r in rules if r in means[source] and r in means[task]]
        k = stats.kendall_tau([means[source][r] for r in both], [means[task][r] for r in both])
        rank_agreement.append(dict(source=source, target=task, rules=both,
                                   kendall_tau=k.tau, p_value=k.p_value, n=k.n,
                                   method=k.method))
    effect = []
    for task in tasks:
        if task == source:
            continue
        src = {c['rule']: c['diffs'] for c in comparisons if c['task'] == source}
        tgt = {c['rule']: c['diffs'] for c in comparisons if c['task'] == task}
        effect.append(dict(source=source, target=task,
                           **stats.effect_transfer(src, tgt, confidence, draws=draws)))
    summary = dict(meta=dict(meta or {}), tasks=list(tasks), rules=list(rules),
                   baseline=baseline, seeds=list(seeds), source=source, match=match,
                   effect_transfer=effect,
                   confidence=confidence, correction=correction, tolerance=tolerance,
                   latency_backends=backends,
                   machine=machine_summary(rows), arms=arms, comparisons=comparisons,
                   not_applicable=[dict(task=t, rule=r, reason=why) for t in tasks
                                   for r, why in skip.get(t, {}).items()],
                   rank_agreement=rank_agreement)
    summary = json_safe(summary)
    summary.update(headline(summary))
    return summary


def _cost_view(m: Optional[Mapping[str, Any]], match: str, flops_ratio: float,
               tolerance: float, rule: str, task: str) -> Dict[str, Any]:
    """``cost_ratio``, ``matched``, ``match_reason`` and the ``match`` record of one arm.

    With a match record (a rule re-matched on the task), FLOPs matching reports the FLOPs the
    trial counted (``flops_ratio``), latency matching the solver's measured ratio.
    """
    if m is None:
        ok = bool(math.isfinite(flops_ratio) and abs(flops_ratio - 1) <= tolerance)
        why = '' if ok else (f'rule {rule} on task {task}: the rule file as written costs '
                             f'x{flops_ratio:.2f} the baseline FLOPs (tolerance '
                             f'{tolerance:.0%}; --match none)')
        return dict(cost_ratio=flops_ratio, matched=ok, match_reason=why, match=None)
    ratio = flops_ratio if m.get('metric') == 'flops' else m.get('ratio')
    ok = bool(m['matched'] and ratio is not None and abs(ratio - 1) <= m['tolerance'] + 1e-9)
    why = m.get('reason') or ('' if ok else f'rule {rule} on task {task}: the trained arm '
                              f'costs x{ratio:.3f} the baseline {m.get("metric")}')
    return dict(cost_ratio=ratio, matched=ok, match_reason=why,
                match=dict(knob=m['knob'], value=m['value'], metric=m['metric'],
                           rule_ratio=m.get('rule_ratio'), solver_ratio=m.get('ratio'),
                           tolerance=m['tolerance']))


def _latency_view(lat: Mapping[tuple, Mapping[str, Mapping[str, float]]], task: str, rule: str,
                  baseline: str, backends: Sequence[str], tolerance: float) -> Dict[str, Any]:
    """Latency ratios to the baseline per backend; within the baseline's latency budget on
    the first backend (``None`` without latency rows)."""
    ratios = {}
    for b in backends:
        mine, base = lat.get((task, rule), {}).get(b), lat.get((task, baseline), {}).get(b)
        if mine and base and base['median_ms'] > 0:
            ratios[b] = mine['median_ms'] / base['median_ms']
    first = ratios.get(backends[0]) if backends else None
    return dict(latency_ratio=ratios,
                within_latency_budget=None if first is None else bool(first <= 1 + tolerance))


def _comparison(summary: Mapping[str, Any], task: str,
                rule: str) -> Optional[Mapping[str, Any]]:
    return next((c for c in summary['comparisons'] if c['task'] == task and c['rule'] == rule),
                None)


def _span(c: Mapping[str, Any]) -> str:
    lo, hi = c['ci95']
    if lo is None:
        return f"{_fmt(c['diff_mean'])} points, no interval (one seed)"
    text = f"{_fmt(c['diff_mean'])} points, 95% interval {_fmt(lo)} to {_fmt(hi)}"
    return text + _family_span(c)


def corrected(c: Mapping[str, Any]) -> bool:
    """Whether comparison ``c``'s verdict follows a family-wise interval other than its 95%
    one (a correction over >= 2 comparisons, and an interval at all)."""
    return (c.get('family_confidence') is not None and c.get('correction', 'none') != 'none'
            and c.get('family_size', 1) >= 2 and c['ci_family'][0] is not None)


def _family_span(c: Mapping[str, Any]) -> str:
    """``'; 98.3% interval over the 3 rules (Bonferroni) -0.11 to +1.15'``, or ``''`` when
    the verdict follows the 95% interval itself."""
    if not corrected(c):
        return ''
    conf = c['family_confidence']
    lo, hi = c['ci_family']
    return (f"; {stats.percent(conf)} interval over the {c['family_size']} rules "
            f"({c['correction'].capitalize()}, what the verdict follows) {_fmt(lo)} to "
            f"{_fmt(hi)}")


def headline(summary: Mapping[str, Any]) -> Dict[str, Any]:
    """The winner on the source task and what became of it on each target, in words.

    The winner is the rule with the largest mean difference among those that beat the
    baseline at equal cost; with none, the best equal-cost rule is followed and named so.
    """
    source = summary['source']
    cands = [c for c in summary['comparisons'] if c['task'] == source and c['equal_cost']]
    lines = []
    winner = None
    if not cands:
        lines.append(f'No rule is at equal FLOPs to the baseline on {source} '
                     f"(tolerance {summary['tolerance']:.0%}): no comparison at equal cost.")
    else:
        better = [c for c in cands if c['verdict'] == 'better']
        pick = max(better or cands, key=lambda c: c['diff_mean'])
        winner = pick['rule'] if better else None
        if better:
            lines.append(f"{pick['rule']} beats the baseline on {source}: {_span(pick)}.")
        else:
            lines.append(f'No rule in the tested set beats the baseline on {source} at equal '
                         f"FLOPs; the best, {pick['rule']}: {_span(pick)} "
                         f"({SOURCE_WORDS[pick['verdict']]}).")
        for task in summary['tasks']:
            if task == source:
                continue
            c = _comparison(summary, task, pick['rule'])
            if c is None:
                why = next(n['reason'] for n in summary.get('not_applicable', [])
                           if n['task'] == task and n['rule'] == pick['rule'])
                lines.append(f"{pick['rule']} does not apply to {task}: {why}.")
                continue
            words = TARGET_WORDS[c['verdict']]
            hw = c.get('verdict_half_width', c['half_width'])
            extra = (f' (+-{hw:.2f} points)'
                     if c['verdict'] == 'inconclusive' and hw is not None else '')
            lines.append(f"{pick['rule']} {words} {task}: {_span(c)}{extra}.")
    backends = summary.get('latency_backends') or []
    if backends:
        in_budget = [c for c in summary['comparisons']
                     if c['task'] == source and c['within_latency_budget']]
        better = [c for c in in_budget if c['verdict'] == 'better']
        if better:
            best = max(better, key=lambda c: c['diff_mean'])
            lines.append(f"At the baseline's {backends[0]} latency (+{summary['tolerance']:.0%}) "
                         f"instead of its FLOPs: {best['rule']} beats the baseline on {source}: "
                         f'{_span(best)} (latency x{best["latency_ratio"][backends[0]]:.2f}).')
        else:
            lines.append(f"At the baseline's {backends[0]} latency "
                         f"(+{summary['tolerance']:.0%}): no rule beats the baseline on "
                         f'{source} ({len(in_budget)} rule(s) within that budget).')
    for e in summary.get('effect_transfer', []):
        if e['n_rules'] >= 2:
            lines.append(effect_sentence(e))
    for rule in summary['rules']:
        if rule != summary['baseline']:
            text = rule_sentence(summary, rule)
            if text:
                lines.append(text)
    return dict(winner=winner, followed=(pick['rule'] if cands else None), headline=lines)


CELL_WORDS = dict(better='better', worse='worse', inconclusive='tied')


def _unit_word(c: Mapping[str, Any]) -> str:
    unit = str(c.get('metric_unit') or 'points')
    return 'mAP' if 'mAP' in unit else 'points'


def rule_sentence(summary: Mapping[str, Any], rule: str) -> str:
    """``"R: tied on cls (+0.08, -0.40 to +0.57), worse on det at equal FLOPs (-6.30 mAP,
    -7.50 to -5.10)"``: the verdict of ``rule`` on every task with its verdict interval."""
    metric = 'FLOPs' if summary.get('match', 'none') in ('flops', 'none') else 'latency'
    parts = []
    for task in summary['tasks']:
        c = _comparison(summary, task, rule)
        if c is None:
            continue
        lo, hi = c.get('ci_family', c['ci95'])
        span = (f"{_fmt(c['diff_mean'])} {_unit_word(c)}, {_fmt(lo)} to {_fmt(hi)}"
                if lo is not None else f"{_fmt(c['diff_mean'])} {_unit_word(c)}, no interval")
        cost = (f'at equal {metric}' if c.get('matched', c.get('equal_cost'))
                else f"at x{c.get('cost_ratio') or math.nan:.2f} {metric}, not matched")
        parts.append(f"{CELL_WORDS[c['verdict']]} on {task} {cost} ({span})")
    return f"{rule}: " + ', '.join(parts) + '.' if parts else ''


def effect_sentence(e: Mapping[str, Any]) -> str:
    """Effect transfer from the source to one target in words."""
    tlo, thi = e['ci95']['kendall_tau']
    rlo, rhi = e['ci95']['pearson_r']
    return (f"Effect transfer {e['source']} -> {e['target']} over {e['n_rules']} rules: Kendall "
            f"tau {stats.fmt_tau(e['kendall_tau'])} (95% interval over seeds "
            f"{stats.fmt_tau(tlo)} to {stats.fmt_tau(thi)}), Pearson r "
            f"{stats.fmt_tau(e['pearson_r'])} ({stats.fmt_tau(rlo)} to {stats.fmt_tau(rhi)}): "
            f"{e['verdict']}.")


# ---------------------------------------------------------------------------- markdown / png
def to_markdown(summary: Mapping[str, Any], title: str = 'Study') -> str:
    """The summary in tables and sentences (the same numbers as the JSON)."""
    m = summary['machine']
    meta = summary.get('meta', {})
    load = m['loadavg_1min']
    lines = [f'# {title}', '']
    if meta.get('description'):
        lines += [meta['description'], '']
    lines += [
        f"Seeds {summary['seeds']} (paired: every arm of a task uses the same seeds); "
        f"baseline `{summary['baseline']}`; source task `{summary['source']}`.",
        f"Machine: {', '.join(m['cpu'])}; torch {', '.join(m['torch'])}; torch threads "
        f"{', '.join(str(t) for t in m['threads'])} per trial; 1-min load average "
        + (f'{load[0]:.2f} to {load[1]:.2f}' if load else 'n/a')
        + f" over {m['trials']} trials ({m['trial_seconds'] / 60:.1f} trial-minutes).",
        f"Intervals: {summary['confidence']:.0%} Student t over seeds; differences are paired "
        'per seed. A verdict is "better" / "worse" only when the interval of the difference '
        'excludes 0' + (
            '; on each task that interval is corrected (Bonferroni) for the number of rules '
            'compared with the baseline, so the verdicts of all rules hold together at '
            + stats.percent(summary['confidence']) + ' (the study names a winner among them)'
            if summary.get('correction', 'none') != 'none' else '') + '.'
        + _equal_cost_text(summary) + ' Latency: backbone, batch 1, CPU, median of the round '
        'medians (the arms of a task alternate in rounds); the round spread is the noise '
        'floor.', '',
        '## Headline', '']
    lines += [f'- {s}' for s in summary['headline']]
    for task in summary['tasks']:
        arms = [a for a in summary['arms'] if a['task'] == task]
        unit = arms[0]['metric_unit']
        backends = summary.get('latency_backends') or []
        lines += ['', f'## {task}: {arms[0]["metric_name"]} ({unit})', '',
                  '| rule | GFLOPs | FLOPs vs baseline | params (M) | '
                  + ''.join(f'{b} ms (round spread) | ' for b in backends)
                  + 'mean | 95% interval | per seed |',
                  '|---|---|---|---|' + '---|' * len(backends) + '---|---|---|']
        for a in arms:
            lo, hi = a['ci95']
            lat = ''
            for b in backends:
                m = a['latency'].get(b)
                lat += (f"{m['median_ms']:.2f} ({m['round_min_ms']:.2f}-{m['round_max_ms']:.2f})"
                        ' | ' if m else 'n/a | ')
            lines.append(f"| {a['rule']} | {a['gflops']:.4f} | x{a['flops_ratio']:.2f} | "
                         f"{a['params_m']:.3f} | {lat}{_fmt(a['mean'], sign=False)} | "
                         f"{_fmt(lo, sign=False)} to {_fmt(hi, sign=False)} | "
                         + ', '.join(f'{v:.2f}' for v in a['metrics']) + ' |')
        comps = [c for c in summary['comparisons'] if c['task'] == task]
        if comps:
            fam = comps[0].get('family_confidence') or summary['confidence']
            fam_head = (f"{stats.percent(fam)} interval ({comps[0]['correction']}, "
                        f"{comps[0]['family_size']} rules): the verdict's"
                        if corrected(comps[0]) else "verdict's interval (= 95%)")
            lines += ['', f'| rule vs baseline | difference | 95% interval | {fam_head} | '
                      'paired t p | cost ratio | matched (solved knob) | verdict |',
                      '|---|---|---|---|---|---|---|---|']
            for c in comps:
                lo, hi = c['ci95']
                flo, fhi = c.get('ci_family', c['ci95'])
                m = c.get('match') or {}
                knob = (f" ({m['knob']}={m['value']}; as written x{m['rule_ratio']:.2f})"
                        if m.get('value') is not None and m.get('rule_ratio') is not None
                        else '')
                ratio = c.get('cost_ratio', c['flops_ratio'])
                lines.append(f"| {c['rule']} | {_fmt(c['diff_mean'])} | {_fmt(lo)} to "
                             f"{_fmt(hi)} | {_fmt(flo)} to {_fmt(fhi)} | "
                             f"{_fmt(c['p_value'], 3, sign=False)} | "
                             f"x{ratio if ratio is not None else math.nan:.3f} | "
                             f"{'yes' if c.get('matched', c['equal_cost']) else 'no'}{knob} | "
                             f"{c['verdict']} |")
            unmatched = [c for c in comps if not c.get('matched', c['equal_cost'])]
            lines += [''] + [f"- not matched: {c.get('match_reason') or c['rule']}"
                             for c in unmatched] if unmatched else []
            hws = [c.get('verdict_half_width', c['half_width']) for c in comps]
            hws = [h for h in hws if h is not None]
            if hws:
                lines += ['', 'Power: ' + stats.power_text(
                    max(hws), 'points', len(summary['seeds']),
                    stats.percent(fam) + ' interval, the verdicts\' half-width') + '.']
    if summary.get('not_applicable'):
        lines += ['', '## Arms not run', '']
        lines += [f"- {n['rule']} on {n['task']}: {n['reason']}" for n in summary['not_applicable']]
    if summary.get('effect_transfer'):
        lines += ['', '## Effect transfer', '',
                  "Kendall tau-b and Pearson r between the rules' mean paired effects (rule - "
                  'baseline) on the source and on each target; 95% intervals by resampling the '
                  'seeds with replacement (the same draw on both tasks); the verdict follows the '
                  'tau interval.', '',
                  '| source | target | rules | Kendall tau (95%) | Pearson r (95%) | verdict |',
                  '|---|---|---|---|---|---|']
        for e in summary['effect_transfer']:
            tlo, thi = e['ci95']['kendall_tau']
            rlo, rhi = e['ci95']['pearson_r']
            lines.append(f"| {e['source']} | {e['target']} | {e['n_rules']} | "
                         f"{stats.fmt_tau(e['kendall_tau'])} ({stats.fmt_tau(tlo)} to "
                         f"{stats.fmt_tau(thi)}) | {stats.fmt_tau(e['pearson_r'])} "
                         f"({stats.fmt_tau(rlo)} to {stats.fmt_tau(rhi)}) | {e['verdict']} |")
    if summary['rank_agreement']:
        lines += ['', '## Rank agreement', '',
                  f"Kendall tau-b between the rules' mean {summary['source']} metric and "
                  'their mean on each target (the rules run on both, the baseline included).',
                  '',
                  '| source | target | rules | Kendall tau | p-value |', '|---|---|---|---|---|']
        for r in summary['rank_agreement']:
            lines.append(f"| {r['source']} | {r['target']} | {r['n']} | "
                         f"{_fmt(r['kendall_tau'], 3)} | {_fmt(r['p_value'], 3, sign=False)} |")
    return '\n'.join(lines) + '\n'


def _equal_cost_text(summary: Mapping[str, Any]) -> str:
    match, tol = summary.get('match', 'none'), summary['tolerance']
    if match == 'none':
        return (f' Equal cost: backbone FLOPs within {tol:.0%} of the baseline (the rule files '
                'as written, --match none).')
    metric = 'backbone FLOPs' if match == 'flops' else 'eager batch-1 latency'
    return (f' Equal cost: on every task each rule is re-matched to that task baseline\'s '
            f'{metric} by solving its width (the rule\'s other knobs kept), within {tol:.0%}'
            + (' or the latency noise floor when larger' if match == 'latency' else '')
            + '; "cost ratio" is what the trained arm costs, "not matched" says why.')


def family_bar(ax: Any, c: Mapping[str, Any], y: float) -> None:
    """Draw comparison ``c``'s family-wise (verdict) interval as a thin bar at ``y`` when it
    differs from the 95% one."""
    lo, hi = c.get('ci_family', c['ci95'])
    if lo is None or [lo, hi] == list(c['ci95']):
        return
    ax.errorbar(c['diff_mean'], y + 0.15, xerr=[[c['diff_mean'] - lo], [hi - c['diff_mean']]],
                fmt='none', capsize=2, lw=0.8, color='0.55')


def plot(summary: Mapping[str, Any], path: str) -> None:
    """Per task: arm means with 95% error bars, and paired differences to the baseline."""
    plt = pyplot()
    tasks = summary['tasks']
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.2 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        arms = [a for a in summary['arms'] if a['task'] == task]
        ys = list(range(len(arms)))
        for y, a in zip(ys, arms):
            lo, hi = a['ci95']
            err = [[a['mean'] - lo], [hi - a['mean']]] if lo is not None else None
            row[0].errorbar(a['mean'], y, xerr=err, fmt='o', capsize=4,
                            color='tab:blue' if a['rule'] == summary['baseline'] else 'tab:red')
            row[0].scatter(a['metrics'], [y] * len(a['metrics']), s=10, color='0.5', zorder=3)
        row[0].set_yticks(ys, [a['rule'] for a in arms], fontsize=8)
        row[0].set_xlabel(f"{task}: {arms[0]['metric_unit']} (mean, 95% interval, seeds)")
        row[0].grid(alpha=0.3)
        row[0].margins(y=0.3)
        comps = [c for c in summary['comparisons'] if c['task'] == task]
        for y, c in enumerate(comps):
            lo, hi = c['ci95']
            err = [[c['diff_mean'] - lo], [hi - c['diff_mean']]] if lo is not None else None
            color = dict(better='tab:green', worse='tab:red').get(c['verdict'], '0.3')
            row[1].errorbar(c['diff_mean'], y, xerr=err, fmt='s', capsize=4, color=color)
            family_bar(row[1], c, y)
        row[1].axvline(0, color='k', lw=0.8)
        row[1].set_yticks(list(range(len(comps))), [c['rule'] for c in comps], fontsize=8)
        row[1].set_xlabel(f'{task}: difference to {summary["baseline"]} (points, 95% interval'
                          + ('; thin: the verdict\'s family-wise interval)'
                             if any(corrected(c) for c in comps) else ')'))
        row[1].grid(alpha=0.3)
        row[1].margins(y=0.3)
        row[1].set_title('; '.join(f"{c['rule']}: {c['verdict']}" for c in comps), fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def matrix_cells(summary: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The rules x tasks matrix as data: one cell per comparison (rule vs baseline on a
    task) with its mean paired difference, the verdict's interval, verdict and cost match."""
    cells = []
    rules = [r for r in summary['rules'] if r != summary['baseline']]
    for i, rule in enumerate(rules):
        for j, task in enumerate(summary['tasks']):
            c = _comparison(summary, task, rule)
            if c is None:
                continue
            lo, hi = c.get('ci_family', c['ci95'])
            cells.append(dict(row=i, col=j, rule=rule, task=task, mean=c['diff_mean'],
                              low=lo, high=hi, verdict=c['verdict'],
                              matched=bool(c.get('matched', c.get('equal_cost'))),
                              cost_ratio=c.get('cost_ratio', c.get('flops_ratio')),
                              text=f"{_fmt(c['diff_mean'])}\n[{_fmt(lo)}, {_fmt(hi)}]"
                              + ('' if c.get('matched', c.get('equal_cost')) else ' *')))
    return cells


def plot_matrix(summary: Mapping[str, Any], path: str) -> List[Dict[str, Any]]:
    """Rules x tasks: colour = mean paired difference to the baseline (one symmetric scale),
    text = mean and the verdict's interval, hatched when inconclusive, ``*`` where the cost
    is not matched. Returns the cells drawn (:func:`matrix_cells`)."""
    import numpy as np
    plt = pyplot()
    from matplotlib.patches import Rectangle
    cells = matrix_cells(summary)
    rules = [r for r in summary['rules'] if r != summary['baseline']]
    tasks = list(summary['tasks'])
    grid = np.full((max(1, len(rules)), max(1, len(tasks))), np.nan)
    for c in cells:
        grid[c['row'], c['col']] = c['mean'] if c['mean'] is not None else np.nan
    vmax = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    fig, ax = plt.subplots(figsize=(2.0 + 2.1 * len(tasks), 1.2 + 0.75 * len(rules)))
    im = ax.imshow(grid, cmap='RdBu', vmin=-vmax or -1, vmax=vmax or 1, aspect='auto')
    for c in cells:
        if c['verdict'] == 'inconclusive':
            ax.add_patch(Rectangle((c['col'] - 0.5, c['row'] - 0.5), 1, 1, fill=False,
                                   hatch='//', edgecolor='0.6', lw=0))
        dark = c['mean'] is not None and abs(c['mean']) > 0.6 * vmax
        ax.text(c['col'], c['row'], c['text'], ha='center', va='center', fontsize=8,
                color='white' if dark else 'black')
    ax.set_xticks(range(len(tasks)), [f"{t}\n({'source' if t == summary['source'] else 'target'})"
                                      for t in tasks], fontsize=8)
    ax.set_yticks(range(len(rules)), rules, fontsize=8)
    metric = dict(flops='FLOPs', latency='eager latency').get(summary.get('match'), 'FLOPs')
    ax.set_title(f"Paired difference to {summary['baseline']} (points; [verdict interval]); "
                 f"hatched: inconclusive; *: not at equal {metric}", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label='difference (points)')
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return cells


def write_report(summary: Mapping[str, Any], out_dir: str, name: str,
                 title: str = 'Study') -> Dict[str, str]:
    """``<name>.json``, ``.md``, ``.png`` and, with at least one rule compared,
    ``<name>_matrix.png`` under ``out_dir`` (each written atomically)."""
    paths = {ext: osp.join(out_dir, f'{name}.{ext}') for ext in ('json', 'md', 'png')}
    write_json(paths['json'], summary)
    write_markdown(paths['md'], to_markdown(summary, title))
    plot(summary, paths['png'])
    if summary['comparisons']:
        paths['matrix'] = osp.join(out_dir, f'{name}_matrix.png')
        plot_matrix(summary, paths['matrix'])
    return paths


# ---------------------------------------------------------------------------- reproducibility
def agreement(first: Mapping[str, Any], second: Mapping[str, Any]) -> Dict[str, Any]:
    """Verdicts of two runs of one study (e.g. disjoint seed sets) side by side.

    Rows cover the (task, rule) comparisons both summaries hold. ``agree``: same verdict word;
    ``same_sign``: the mean differences point the same way; ``opposed``: one run says
    ``better`` where the other says ``worse`` (the failure that matters most). Raises
    ``ValueError`` when the two have different baselines or no comparison in common.
    """
    if first.get('baseline') != second.get('baseline'):
        raise ValueError(f"the two studies have different baselines: {first.get('baseline')!r} "
                         f"and {second.get('baseline')!r}")
    rows = []
    for a in first['comparisons']:
        b = _comparison(second, a['task'], a['rule'])
        if b is None:
            continue
        rows.append(dict(
            task=a['task'], rule=a['rule'], seeds=[a['seeds'], b['seeds']],
            diff_mean=[a['diff_mean'], b['diff_mean']], ci95=[a['ci95'], b['ci95']],
            ci_family=[a.get('ci_family', a['ci95']), b.get('ci_family', b['ci95'])],
            verdict=[a['verdict'], b['verdict']], agree=a['verdict'] == b['verdict'],
            same_sign=(a['diff_mean'] > 0) == (b['diff_mean'] > 0),
            opposed={a['verdict'], b['verdict']} == {'better', 'worse'}))
    if not rows:
        raise ValueError('the two studies have no (task, rule) comparison in common')
    return dict(baseline=first['baseline'], rows=rows,
                agreed=sum(r['agree'] for r in rows), total=len(rows),
                opposed=sum(r['opposed'] for r in rows),
                same_sign=sum(r['same_sign'] for r in rows))


def agreement_markdown(result: Mapping[str, Any], names: Sequence[str] = ('run 1', 'run 2')
                       ) -> str:
    """The agreement table in Markdown, with the count in words first."""
    lines = [f"Verdicts agree in {result['agreed']} of {result['total']} comparisons with "
             f"{result['baseline']}; opposite verdicts (better vs worse): {result['opposed']}; "
             f"same sign of the mean difference: {result['same_sign']} of {result['total']}.",
             '', f'| task | rule | {names[0]} | {names[1]} | agree |', '|---|---|---|---|---|']
    for r in result['rows']:
        cells = []
        for i in range(2):
            lo, hi = r['ci95'][i]
            span = (f'{_fmt(lo)} to {_fmt(hi)}' if lo is not None else 'no interval')
            flo, fhi = r.get('ci_family', r['ci95'])[i]
            if flo is not None and [flo, fhi] != [lo, hi]:
                span += f'; verdict interval {_fmt(flo)} to {_fmt(fhi)}'
            seeds = ', '.join(str(s) for s in r['seeds'][i])
            cells.append(f"{r['verdict'][i]}: {_fmt(r['diff_mean'][i])} ({span}; seeds {seeds})")
        lines.append(f"| {r['task']} | {r['rule']} | {cells[0]} | {cells[1]} | "
                     f"{'yes' if r['agree'] else 'no'} |")
    return '\n'.join(lines) + '\n'


def expected_agreement(pooled: Mapping[str, Any], seeds_per_run: int, draws: int = 2000,
                       correction: str = 'bonferroni', seed: int = 0) -> Dict[str, Any]:
    """How often two disjoint ``seeds_per_run``-seed runs would agree, by resampling a pooled
    study (one report with at least ``2 * seeds_per_run`` seeds).

    Each draw splits the pooled seeds into two disjoint random sets and recomputes every
    comparison's verdict on each (:func:`mmvitscale.experiments.stats.compare`, the family
    per task as in :func:`summarize`). Returns the mean number of agreeing verdicts, the
    fraction of draws where all agree or some are opposite (better vs worse), and the mean
    number of non-inconclusive verdicts per run (what the design can still detect). The
    draws share seeds, so they are not independent runs: an estimate for choosing defaults,
    not a test.
    """
    import numpy as np
    seeds = list(pooled['seeds'])
    if isinstance(seeds_per_run, bool) or not isinstance(seeds_per_run, int) \
            or seeds_per_run < 2 or 2 * seeds_per_run > len(seeds):
        raise ValueError(f'seeds_per_run must be an integer in [2, {len(seeds) // 2}] for a '
                         f'report with {len(seeds)} seeds, got {seeds_per_run!r}')
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f'draws must be a positive integer, got {draws!r}')
    stats.family_confidence(0.95, 1, correction)
    values = {(a['task'], a['rule']): dict(zip(a['seeds'], a['metrics'])) for a in pooled['arms']}
    comps = [(c['task'], c['rule'], c['baseline']) for c in pooled['comparisons']]
    # each comparison's family as the report says (reports without the field: count per task)
    family = {t: sum(1 for c in comps if c[0] == t) for t, _, _ in comps}
    family.update({c['task']: c['family_size'] for c in pooled['comparisons']
                   if 'family_size' in c})
    confidence = pooled.get('confidence', 0.95)
    rng = np.random.default_rng(seed)
    agreed, all_agree, opposed, detected = [], 0, 0, []
    for _ in range(draws):
        order = rng.permutation(len(seeds))
        runs = [[seeds[i] for i in order[:seeds_per_run]],
                [seeds[i] for i in order[seeds_per_run:2 * seeds_per_run]]]
        words = []
        for run in runs:
            words.append([stats.compare(
                stats.paired_differences([values[(t, r)][s] for s in run],
                                         [values[(t, b)][s] for s in run]),
                confidence, family[t], correction)['verdict'] for t, r, b in comps])
        same = sum(x == y for x, y in zip(*words))
        agreed.append(same)
        all_agree += same == len(comps)
        opposed += any({x, y} == {'better', 'worse'} for x, y in zip(*words))
        detected += [sum(w != 'inconclusive' for w in ws) for ws in words]
    return dict(seeds=seeds, seeds_per_run=seeds_per_run, draws=draws, correction=correction,
                comparisons=len(comps), mean_agreed=float(np.mean(agreed)),
                p_all_agree=all_agree / draws, p_any_opposed=opposed / draws,
                mean_detected=float(np.mean(detected)))
