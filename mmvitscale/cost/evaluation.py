"""Latency-predictor study: sampled architectures, held-out splits, reports.

* :func:`sample_archs`: seeded scaled DeiT-Ti (``core``: inside a training box of depth, width
  and resolution multipliers; ``beyond``: one of depth, width or resolution past the box) and
  scaled PiT-Ti architectures;
* :func:`latencies`: dataset rows -> one latency per (setting, run, architecture);
* :func:`evaluate`: fit each predictor kind on a seeded share of the ``core`` ViTs and report
  MAPE / % within +-10% on the held-out ``core`` ViTs (``random``), the ``beyond`` ViTs
  (``out-of-range``, checked to lie outside the training archs' range) and the PiTs
  (``cross-family``);
* :func:`markdown` / :func:`plot_scatter` / :func:`plot_calibration`: the report;
* :func:`measure_items` / :func:`fit_report`: what ``tools/analysis/fit_latency_predictor.py``
  measures and writes.
"""
import random
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..families import family_of_dict
from ..fileio import pyplot, save_figure
from .calibration import within
from .predictor import arch_from_dict, make_predictor, mape

CORE_GRID: Dict[str, Tuple[float, ...]] = dict(
    depth_mult=(0.5, 0.75, 1.0), width_mult=(0.5, 0.75, 1.0), resolution_mult=(0.5, 0.75, 1.0),
    mlp_ratio_mult=(0.5, 1.0), heads_mult=(1.0, 2.0))
BEYOND: Dict[str, Tuple[float, ...]] = dict(depth_mult=(1.5, ), width_mult=(1.5, ),
                                            resolution_mult=(1.25, ))
PIT_GRID: Dict[str, Tuple[float, ...]] = dict(
    depth_mult=(0.5, 1.0), width_mult=(0.75, 1.0), resolution_mult=(0.5, 0.75, 1.0),
    mlp_ratio_mult=(0.5, 1.0))
SPLITS = ('train', 'random', 'out-of-range', 'cross-family')
KINDS = ('analytic', 'kernel')


def _family(item: Mapping[str, Any]) -> str:
    """A dataset item's family: its ``family`` field, else that of its arch dict."""
    return item['family'] or family_of_dict(item['arch']).name


def _draw(rng: random.Random, grid: Mapping[str, Sequence[float]]) -> Dict[str, float]:
    rule = {k: rng.choice(tuple(v)) for k, v in grid.items()}
    return {k: v for k, v in rule.items() if v != 1.0}


def sample_archs(n_core: int = 30, n_beyond: int = 8, n_pit: int = 8, seed: int = 0,
                 vit_base: str = 'deit-tiny', pit_base: str = 'pit-ti', img_size: int = 224,
                 patch_size: int = 16) -> List[Dict[str, Any]]:
    """Seeded, distinct architectures: ``[dict(family, group, rule, arch), ...]``.

    ``group`` is ``core`` (multipliers from :data:`CORE_GRID`), ``beyond`` (as core, but one
    of depth / width / resolution from :data:`BEYOND`) or ``pit`` (:data:`PIT_GRID`).
    """
    from ..families import get_family
    bases = dict(vit=(vit_base, img_size, patch_size), pit=(pit_base, img_size, None))
    rng = random.Random(seed)
    out: List[Dict[str, Any]] = []
    seen = set()

    def add(family: str, group: str, n: int, make_rule) -> None:
        tries = 0
        while sum(1 for a in out if a['group'] == group) < n:
            tries += 1
            if tries > 200 * max(n, 1):
                raise ValueError(f'sample_archs: could only draw '
                                 f'{sum(1 for a in out if a["group"] == group)} of {n} '
                                 f'distinct {group} architectures')
            rule = make_rule()
            try:
                arch = get_family(family).resolve(*bases[family], rule)
            except ValueError:
                continue
            if arch not in seen:
                seen.add(arch)
                out.append(dict(family=family, group=group, rule=rule, arch=arch.as_dict()))

    def beyond_rule() -> Dict[str, float]:
        rule = _draw(rng, CORE_GRID)
        knob = rng.choice(sorted(BEYOND))
        rule[knob] = rng.choice(BEYOND[knob])
        return rule

    add('vit', 'core', n_core, lambda: _draw(rng, CORE_GRID))
    add('vit', 'beyond', n_beyond, beyond_rule)
    add('pit', 'pit', n_pit, lambda: _draw(rng, PIT_GRID))
    return out


def setting_name(fp: Mapping[str, Any]) -> str:
    """``backend/<threads>t`` (plus the clock when it is not wall time)."""
    text = f"{fp.get('backend', '?')}/{fp.get('threads', '?')}t"
    return text + (f"/{fp['clock']}" if fp.get('clock') and fp['clock'] != 'wall' else '')


def _key(arch: Mapping[str, Any]) -> str:
    import json
    return json.dumps(arch, sort_keys=True)


def latencies(rows: Sequence[Mapping[str, Any]], stat: str = 'median_ms'
              ) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """Dataset rows -> ``{(setting name, run id): dict(fingerprint, archs, groups, families,
    y, noise)}`` with one entry per architecture (several rows of one arch in one run: the
    median of their ``stat``)."""
    groups: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for r in rows:
        if stat not in r:
            continue
        key = (setting_name(r['fingerprint']), str(r.get('run_id', 'run')))
        g = groups.setdefault(key, dict(fingerprint=r['fingerprint'], items={}))
        arch = dict(r['arch'])
        arch['img_size'] = list((r.get('input_shape') or [3, *arch['img_size']])[1:])
        item = g['items'].setdefault(_key(arch), dict(arch=arch, family=r.get('family'),
                                                      group=r.get('group'), values=[],
                                                      noise=[], share=[]))
        item['values'].append(float(r[stat]))
        if isinstance(r.get('cpu_share'), (int, float)):
            item['share'].append(float(r['cpu_share']))
        if isinstance(r.get('noise_pct'), (int, float)):
            item['noise'].append(float(r['noise_pct']))
    out = {}
    for key, g in groups.items():
        items = list(g['items'].values())
        families = [_family(i) for i in items]
        out[key] = dict(fingerprint=g['fingerprint'], archs=[i['arch'] for i in items],
                        families=families,
                        groups=[i['group'] or ('pit' if fam == 'pit' else 'core')
                                for i, fam in zip(items, families)],
                        y=np.array([float(np.median(i['values'])) for i in items]),
                        noise=np.array([float(np.median(i['noise'])) if i['noise'] else np.nan
                                        for i in items]),
                        cpu_share=np.array([float(np.median(i['share'])) if i['share'] else
                                            np.nan for i in items]))
    return out


def _ranges(archs: Sequence[Mapping[str, Any]]) -> Dict[str, Tuple[float, float]]:
    keys = dict(depth=lambda a: a['num_layers'], width=lambda a: a['embed_dims'],
                resolution=lambda a: a['img_size'][0])
    return {k: (min(f(a) for a in archs), max(f(a) for a in archs)) for k, f in keys.items()}


def splits(data: Mapping[str, Any], train_frac: float = 0.6, seed: int = 0
           ) -> Dict[str, np.ndarray]:
    """Index arrays per split (:data:`SPLITS`); ``out-of-range`` keeps only the ``beyond``
    ViTs whose depth, width or resolution really lies outside the training archs' range."""
    if not 0 < train_frac < 1:
        raise ValueError(f'train_frac must be in (0, 1), got {train_frac}')
    groups, fams = data['groups'], data['families']
    core = [i for i, g in enumerate(groups) if g == 'core' and fams[i] == 'vit']
    if len(core) < 4:
        raise ValueError(f'needs at least 4 core ViT architectures, got {len(core)}')
    order = np.random.default_rng(seed).permutation(core)
    n_train = max(2, int(round(train_frac * len(core))))
    train = np.sort(order[:n_train])
    rng = _ranges([data['archs'][i] for i in train])
    beyond = []
    for i, g in enumerate(groups):
        if g != 'beyond' or fams[i] != 'vit':
            continue
        a = data['archs'][i]
        vals = dict(depth=a['num_layers'], width=a['embed_dims'], resolution=a['img_size'][0])
        if any(not lo <= vals[k] <= hi for k, (lo, hi) in rng.items()):
            beyond.append(i)
    return {'train': train, 'random': np.sort(order[n_train:]),
            'out-of-range': np.array(beyond, dtype=int),
            'cross-family': np.array([i for i, f in enumerate(fams) if f == 'pit'], dtype=int)}


TARGET_MAPE, TARGET_WITHIN10 = 5.0, 95.0  # issue 14's acceptance targets


def split_metrics(pred: np.ndarray, y: np.ndarray) -> Dict[str, Any]:
    """n, MAPE, % within +-10%, worst absolute percentage error, and ``meets_target``:
    MAPE < 5% and >= 95% within +-10%."""
    if not y.size:
        return dict(n=0, mape=None, within10=None, max_ape=None, meets_target=None)
    m, w = mape(pred, y), within(pred, y)
    return dict(n=int(y.size), mape=m, within10=w,
                max_ape=float(np.max(np.abs(pred - y) / y) * 100),
                meets_target=bool(m < TARGET_MAPE and w >= TARGET_WITHIN10))


def evaluate(data: Mapping[str, Any], kinds: Sequence[str] = KINDS, train_frac: float = 0.6,
             seed: int = 0, in_channels: int = 3) -> Dict[str, Any]:
    """Fit each predictor kind on the train split of one (setting, run); metrics per split."""
    idx = splits(data, train_frac, seed)
    archs, y = [arch_from_dict(a) for a in data['archs']], np.asarray(data['y'])
    out: Dict[str, Any] = dict(
        splits={k: v.tolist() for k, v in idx.items()}, kinds={},
        train_range=_ranges([data['archs'][i] for i in idx['train']]),
        noise_floor_pct=(float(np.nanmedian(data['noise']))
                         if np.any(np.isfinite(data['noise'])) else None),
        cpu_share=(float(np.nanmedian(data['cpu_share']))
                   if np.any(np.isfinite(data.get('cpu_share', [np.nan]))) else None),
        latency_ms_range=[float(y.min()), float(y.max())])
    for kind in kinds:
        pred_model = make_predictor(kind, dict(fingerprint=data['fingerprint']))
        pred_model.fit([archs[i] for i in idx['train']], y[idx['train']], in_channels)
        pred = pred_model.predict_many(archs, in_channels, any_family=True)
        out['kinds'][kind] = dict(
            predictor=pred_model, predictions=pred.tolist(),
            metrics={s: split_metrics(pred[i], y[i]) for s, i in idx.items()})
    return out


def run_to_run(data: Mapping[Tuple[str, str], Mapping[str, Any]]) -> Dict[str, Any]:
    """Per setting with several runs: ``|a - b| / mean`` (%) of each arch measured in two
    runs, summarised as median and 90th percentile (``{setting: dict(runs, n, median_pct,
    p90_pct)}``)."""
    out: Dict[str, Any] = {}
    for setting in dict.fromkeys(k[0] for k in data):
        runs = [k[1] for k in data if k[0] == setting]
        if len(runs) < 2:
            continue
        diffs = []
        for i, ra in enumerate(runs):
            for rb in runs[i + 1:]:
                a, b = data[(setting, ra)], data[(setting, rb)]
                ya = {_key(x): y for x, y in zip(a['archs'], a['y'])}
                diffs += [200.0 * abs(ya[_key(x)] - y) / (ya[_key(x)] + y)
                          for x, y in zip(b['archs'], b['y']) if _key(x) in ya]
        if diffs:
            out[setting] = dict(runs=runs, n=len(diffs), median_pct=float(np.median(diffs)),
                                p90_pct=float(np.percentile(diffs, 90)))
    return out


def cross_run(data: Mapping[Tuple[str, str], Mapping[str, Any]],
              results: Mapping[Tuple[str, str], Mapping[str, Any]]) -> Dict[str, Any]:
    """Each run's fitted predictors judged on *another* run's held-out archs of the same
    setting (does the error reproduce on a new measurement?): ``{'setting: A -> B': {kind:
    {split: metrics}}}``."""
    out: Dict[str, Any] = {}
    for (setting, ra), res in results.items():
        for (s2, rb), d in data.items():
            if s2 != setting or rb == ra:
                continue
            train_keys = {_key(data[(setting, ra)]['archs'][i]) for i in res['splits']['train']}
            sp = results[(setting, rb)]['splits']
            archs = [arch_from_dict(a) for a in d['archs']]
            entry = {}
            for kind, k in res['kinds'].items():
                pred = k['predictor'].predict_many(archs, any_family=True)
                entry[kind] = {}
                for split in SPLITS[1:]:
                    idx = np.array([i for i in sp[split]
                                    if _key(d['archs'][i]) not in train_keys], dtype=int)
                    entry[kind][split] = split_metrics(pred[idx], d['y'][idx])
            out[f'{setting}: {ra} -> {rb}'] = entry
    return out


def _fmt(v: Any, spec: str = '.2f') -> str:
    return '-' if v is None else format(v, spec)


def markdown(results: Mapping[Tuple[str, str], Mapping[str, Any]],
             calibration: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None,
             title: str = 'Latency predictor',
             runs: Optional[Mapping[str, Any]] = None,
             crossed: Optional[Mapping[str, Any]] = None) -> str:
    """Markdown tables: per setting and run, each predictor's error per split; run-to-run
    spread (:func:`run_to_run`) and fitted-on-one-run, judged-on-another (:func:`cross_run`);
    then the calibration curves (``{'source -> target': rows of calibration_curve}``)."""
    lines = [f'# {title}', '', 'MAPE % / % of archs within +-10% (n archs), `*` where both '
             f'targets (MAPE < {TARGET_MAPE:g}%, >= {TARGET_WITHIN10:g}% within +-10%) are met; '
             'noise floor: median over archs of the spread of per-round medians.', '',
             '| setting | run | noise floor % | predictor | train | held-out (random) | '
             'out-of-range | cross-family (PiT) |', '|---|---|---:|---|---|---|---|---|']
    for (setting, run), res in results.items():
        for kind, k in res['kinds'].items():
            cells = []
            for s in SPLITS:
                m = k['metrics'][s]
                cells.append('-' if not m['n'] else
                             f"{m['mape']:.2f} / {m['within10']:.0f} ({m['n']})"
                             + ('*' if m['meets_target'] and s != 'train' else ''))
            lines.append(f"| {setting} | {run} | {_fmt(res['noise_floor_pct'], '.1f')} | "
                         f"{kind} | " + ' | '.join(cells) + ' |')
    if runs:
        lines += ['', '## Run to run', '', '| setting | runs | archs | |a - b| / mean, median % '
                  '| 90th percentile % |', '|---|---|---:|---:|---:|']
        for setting, r in runs.items():
            lines.append(f"| {setting} | {' / '.join(r['runs'])} | {r['n']} | "
                         f"{r['median_pct']:.1f} | {r['p90_pct']:.1f} |")
    if crossed:
        lines += ['', '## Fitted on one run, judged on another run\'s held-out archs', '',
                  '| setting: fit run -> test run | predictor | held-out (random) | '
                  'out-of-range | cross-family (PiT) |', '|---|---|---|---|---|']
        for name, entry in crossed.items():
            for kind, ms in entry.items():
                cells = ['-' if not m['n'] else
                         f"{m['mape']:.2f} / {m['within10']:.0f} ({m['n']})"
                         for m in (ms[s] for s in SPLITS[1:])]
                lines.append(f'| {name} | {kind} | ' + ' | '.join(cells) + ' |')
    for pair, rows in (calibration or {}).items():
        lines += ['', f'## Calibration {pair}', '',
                  '| samples | method | held-out MAPE % (mean / worst of draws) | '
                  'within +-10% |', '|---:|---|---|---:|']
        for r in rows:
            lines.append(f"| {r['k']} | {r['method']} | {r['mape']:.2f} / "
                         f"{r['worst_mape']:.2f} | {r['within10']:.0f} |")
    return '\n'.join(lines) + '\n'


def plot_scatter(path: str, results: Mapping[Tuple[str, str], Mapping[str, Any]],
                 data: Mapping[Tuple[str, str], Mapping[str, Any]]) -> None:
    """Predicted vs measured, one panel per (setting, run), both predictor kinds."""
    plt = pyplot()
    keys = list(results)
    cols = min(4, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    marks = {'random': 'o', 'out-of-range': '^', 'cross-family': 's'}
    for ax, key in zip(axes.ravel(), keys):
        y = np.asarray(data[key]['y'])
        res = results[key]
        for kind, color in (('analytic', 'tab:gray'), ('kernel', 'tab:blue')):
            if kind not in res['kinds']:
                continue
            pred = np.asarray(res['kinds'][kind]['predictions'])
            for split, mark in marks.items():
                i = np.asarray(res['splits'][split], dtype=int)
                if i.size:
                    ax.scatter(y[i], pred[i], s=14, marker=mark, c=color, alpha=0.75,
                               label=f'{kind} {split}')
        lo, hi = y.min() * 0.8, y.max() * 1.25
        ax.plot([lo, hi], [lo, hi], 'k--', lw=0.7)
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color='k',
                        alpha=0.07, label='+-10%')
        ax.set(xscale='log', yscale='log', xlabel='measured ms', ylabel='predicted ms',
               title=f'{key[0]} ({key[1]})')
    axes.ravel()[0].legend(fontsize=6)
    for ax in axes.ravel()[len(keys):]:
        ax.axis('off')
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_calibration(path: str, calibration: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Held-out MAPE against calibration samples, one panel per source -> target pair."""
    plt = pyplot()
    pairs = list(calibration)
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.6), squeeze=False)
    for ax, pair in zip(axes.ravel(), pairs):
        rows = calibration[pair]
        for method in dict.fromkeys(r['method'] for r in rows if r['k'] > 0):
            pts = sorted((r['k'], r['mape']) for r in rows if r['method'] == method)
            ax.plot(*zip(*pts), marker='o', ls='--' if method.startswith('scratch') else '-',
                    label=method)
        base = next((r['mape'] for r in rows if r['k'] == 0), None)
        if base is not None:
            ax.axhline(base, color='k', lw=0.7, ls=':', label='uncalibrated')
        ax.axhline(10, color='r', lw=0.5)
        ax.set(yscale='log', xlabel='measured archs on the target', ylabel='held-out MAPE %',
               title=pair)
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def measure_items(archs: Sequence[Mapping[str, Any]], img_size: int = 224
                  ) -> List[Dict[str, Any]]:
    """:func:`sample_archs` entries as :func:`~.protocol.measure_rows` items (each its family's
    default arch scaled by its rule, with ``group`` and ``rule`` kept in the rows)."""
    from ..families import get_family
    items = []
    for a in archs:
        fam = get_family(a['family'])
        items.append(dict(cfg=fam.backbone_cfg(fam.default_arch, img_size, rule=a['rule']),
                          family=a['family'], arch=a['arch'],
                          input_shape=(3, *a['arch']['img_size']),
                          fields=dict(group=a['group'], rule=a['rule'],
                                      source='fit_latency_predictor')))
    return items


def fit_report(rows: Sequence[Mapping[str, Any]], out_dir: str, stat: str = 'p10_ms',
               train_frac: float = 0.6, seed: int = 0, cal_sizes: Sequence[int] = (5, 10, 20),
               cal_draws: int = 20, say: Callable[[str], None] = print,
               argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The latency-predictor study on dataset rows; writes its files to ``out_dir``.

    Per (setting, run): both predictor kinds fitted on a seeded ``train_frac`` of the core ViTs
    (:func:`evaluate`), saved as ``<setting>_<run>_<kind>.json``. With several settings in a
    run, the kernel predictor of the first is calibrated to each other one
    (:func:`~.calibration.calibration_curve` over ``cal_sizes`` archs, ``cal_draws`` draws).
    With several runs of a setting, run-to-run agreement (:func:`run_to_run`) and each run's
    predictors on the other run's held-out archs (:func:`cross_run`). Writes ``report.md``,
    ``summary.json``, ``scatter.png`` and ``calibration.png``; returns the summary.
    """
    import json
    import os
    import os.path as osp

    from ..fileio import atomic_write
    from .calibration import METHODS, calibration_curve
    data = latencies(rows, stat)
    if not data:
        raise ValueError(f'no rows carry the statistic {stat!r}')
    os.makedirs(out_dir, exist_ok=True)
    results: Dict[Tuple[str, str], Dict[str, Any]] = {}
    summary: Dict[str, Any] = dict(argv=list(argv or []), runs={}, calibration={}, stat=stat)
    for key in sorted(data, key=lambda k: (k[1], k[0])):
        res = results[key] = evaluate(data[key], train_frac=train_frac, seed=seed)
        entry = dict(noise_floor_pct=res['noise_floor_pct'], cpu_share=res['cpu_share'],
                     train_range=res['train_range'],
                     latency_ms_range=res['latency_ms_range'], kinds={})
        for kind, k in res['kinds'].items():
            stem = f'{key[0].replace("/", "_")}_{key[1]}_{kind}'
            path = k['predictor'].save(osp.join(out_dir, stem + '.json'))
            entry['kinds'][kind] = dict(metrics=k['metrics'], predictor=path,
                                        coefficients=k['predictor'].coefficients)
            m = k['metrics']
            say(f'{key[0]} run {key[1]} {kind:>8}: held-out MAPE '
                + ', '.join(f"{s} {m[s]['mape']:.2f}% ({m[s]['within10']:.0f}% within 10%, "
                            f"n={m[s]['n']}, target "
                            f"{'met' if m[s]['meets_target'] else 'not met'})"
                            for s in SPLITS[1:] if m[s]['n']))
        summary['runs'][f'{key[0]} {key[1]}'] = entry
    calibration: Dict[str, List[Dict[str, Any]]] = {}
    for run in dict.fromkeys(k[1] for k in data):
        keys = [k for k in results if k[1] == run]
        for dst in keys[1:]:
            base = results[keys[0]]['kinds']['kernel']['predictor']
            d, sp = data[dst], results[dst]['splits']
            pool = sorted(sp['train'] + sp['out-of-range'])  # up to 20 calibration samples
            test = sorted(set(range(len(d['archs']))) - set(pool))
            pair = f'{keys[0][0]} -> {dst[0]} ({run})'
            calibration[pair] = calibration_curve(
                base, [d['archs'][i] for i in pool], d['y'][pool],
                [d['archs'][i] for i in test], d['y'][test], sizes=cal_sizes,
                methods=METHODS, draws=cal_draws, seed=seed)
            best = min((r for r in calibration[pair] if r['k'] == max(cal_sizes)
                        and not r['method'].startswith('scratch')),
                       key=lambda r: r['mape'], default=None)
            if best:
                say(f"calibration {pair}: {best['method']} with {best['k']} archs -> held-out "
                    f"MAPE {best['mape']:.2f}%")
    summary['calibration'] = calibration
    runs, crossed = run_to_run(data), cross_run(data, results)
    summary.update(run_to_run=runs, cross_run=crossed)
    for setting, r in runs.items():
        say(f"{setting} run to run ({' / '.join(r['runs'])}): median {r['median_pct']:.1f}%, "
            f"p90 {r['p90_pct']:.1f}% over {r['n']} archs")
    atomic_write(osp.join(out_dir, 'report.md'),
                 markdown(results, calibration, runs=runs, crossed=crossed))
    atomic_write(osp.join(out_dir, 'summary.json'),
                 json.dumps(summary, indent=1, default=float) + '\n')
    plot_scatter(osp.join(out_dir, 'scatter.png'), results, data)
    if calibration:
        plot_calibration(osp.join(out_dir, 'calibration.png'), calibration)
    say(f'wrote {out_dir}/report.md, summary.json, scatter.png'
        + (', calibration.png' if calibration else ''))
    return summary
