"""Device-transfer report: do latency rankings and budgeted winners carry across settings?

A *setting* is one latency-table fingerprint (device, backend, threads, versions; see
:mod:`mmvitscale.cost.latency_table`). From the rows of several settings for the same
architectures this module computes

* for every pair of settings, Kendall's tau-b between their latency rankings over the
  architectures both measured (:func:`kendall_tau`, numpy, O(n^2));
* for each latency budget (a quantile of each setting's latencies, or an absolute value in ms)
  the best architecture under it per setting, by a score (default: FLOPs, the usual accuracy
  proxy of a scaling search; or a per-arch score from a JSON file), whether that winner changes
  between settings, and what each setting's winner is worth on the others (:func:`transfer_report`);

and writes it as Markdown, JSON and a PNG (tau heatmap + a latency scatter), atomically
(:func:`write_report`). Winners are chosen among the architectures measured on *all* selected
settings so they compete on the same candidates.

Inputs are checked before any work (:func:`check_report_inputs`, :func:`read_matrix`,
:func:`check_scatter`); a bad one raises :class:`InputError` naming the argument. Measuring
scaled architectures into a table is :mod:`mmvitscale.experiments.device_measure`.
"""
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..families import family_of_dict, spec_family, spec_from_dict
from ..fileio import atomic_write, pyplot, save_figure
STATS = ('median_ms', 'p10_ms', 'min_ms', 'mean_ms')
REDUCE = ('min', 'median')


class TransferError(ValueError):
    """Inputs that cannot give a device-transfer report (too few settings / architectures)."""


# ---------------------------------------------------------------------------- statistics
def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long samples (:func:`mmvitscale.experiments.stats.
    kendall_tau`, as scipy computes it); ``nan`` when either sample is constant."""
    return kendall_with_p(x, y).tau


def kendall_with_p(x: Sequence[float], y: Sequence[float]):
    """Kendall's tau-b and its two-sided p-value
    (:class:`mmvitscale.experiments.stats.KendallResult`); fewer than 2 values raise."""
    from .stats import kendall_tau as _kendall
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size < 2 and a.size == np.asarray(y).size:
        raise ValueError(f'kendall_tau: needs at least 2 values, got {a.size}')
    return _kendall(a, y)


# ---------------------------------------------------------------------------- table -> matrix
def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(',', ':'))


def arch_key(row: Mapping[str, Any]) -> str:
    """Identity of a measured architecture: arch dict, input shape and batch size."""
    return _canonical(dict(arch=row.get('arch'), input_shape=row.get('input_shape'),
                           batch_size=int(row.get('batch_size', 1))))


def arch_label(row: Mapping[str, Any]) -> str:
    """A short readable name: the row's ``label``, else a compact arch description."""
    if row.get('label'):
        return str(row['label'])
    a = dict(row.get('arch') or {})
    fam = family_of_dict(a)
    if fam is not None and row.get('input_shape'):
        a['img_size'] = list(row['input_shape'][1:])
    try:
        text = fam.arch_text(a, compact=True) if fam is not None else _canonical(a)
    except KeyError:  # a partial dict: its canonical JSON still names it
        text = _canonical(a)
    batch = int(row.get('batch_size', 1))
    return text if batch == 1 else f'{text}-b{batch}'


def setting_label(fp: Mapping[str, Any]) -> str:
    """``device/backend/<threads>t`` (plus a ``clock`` if the fingerprint has one)."""
    dev = fp.get('device_type') or fp.get('device') or '?'
    text = f"{dev}/{fp.get('backend', '?')}/{fp.get('threads', '?')}t"
    if fp.get('clock'):
        text += f"/{fp['clock']}"
    return text


@dataclass
class LatencyMatrix:
    """Latencies per setting (fingerprint id) and architecture (:func:`arch_key`)."""

    settings: List[str] = field(default_factory=list)  # fingerprint ids, first-seen order
    fingerprints: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    names: Dict[str, str] = field(default_factory=dict)  # fingerprint id -> unique label
    archs: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # key -> representative row
    labels: Dict[str, str] = field(default_factory=dict)  # key -> unique label
    latency: Dict[str, Dict[str, float]] = field(default_factory=dict)  # fid -> key -> ms
    stat: str = 'median_ms'
    # fid -> key -> run-to-run spread in % (noise_pct of the rows, else the spread of repeated
    # rows, else the row's p10-p90 spread); noise_source[fid] says which
    noise: Dict[str, Dict[str, float]] = field(default_factory=dict)
    noise_source: Dict[str, str] = field(default_factory=dict)

    def noise_floor(self, fid: str, keys: Optional[Sequence[str]] = None) -> Optional[float]:
        """Median noise (%) over ``keys`` (default all) of one setting; None if unknown."""
        vals = [v for k, v in self.noise.get(fid, {}).items() if keys is None or k in keys]
        return float(np.median(vals)) if vals else None

    def shared(self, fids: Optional[Sequence[str]] = None) -> List[str]:
        """Arch keys measured on every setting of ``fids`` (default all), in first-seen order."""
        fids = list(self.settings if fids is None else fids)
        return [k for k in self.archs if all(k in self.latency[f] for f in fids)]

    def vector(self, fid: str, keys: Sequence[str]) -> np.ndarray:
        return np.array([self.latency[fid][k] for k in keys], dtype=np.float64)


def _unique(names: Dict[str, str]) -> Dict[str, str]:
    seen: Dict[str, int] = {}
    out = {}
    for key, name in names.items():
        seen[name] = seen.get(name, 0) + 1
        out[key] = name if seen[name] == 1 else f'{name}#{seen[name]}'
    return out


def collect(rows: Iterable[Mapping[str, Any]], stat: str = 'median_ms', reduce: str = 'min',
            fingerprints: Optional[Sequence[str]] = None) -> LatencyMatrix:
    """Group latency-table rows into a :class:`LatencyMatrix`.

    Rows without ``stat`` or a fingerprint id are skipped. Several rows of one (setting, arch)
    (repeated runs) are reduced with ``reduce`` (``min``: the run least disturbed by other load).
    ``fingerprints`` keeps only those ids (or unique id prefixes), in that order.
    """
    if stat not in STATS:
        raise ValueError(f'stat must be one of {STATS}, got {stat!r}')
    if reduce not in REDUCE:
        raise ValueError(f'reduce must be one of {REDUCE}, got {reduce!r}')
    values: Dict[str, Dict[str, List[float]]] = {}
    noises: Dict[str, Dict[str, List[float]]] = {}
    spreads: Dict[str, Dict[str, List[float]]] = {}
    m = LatencyMatrix(stat=stat)
    labels: Dict[str, str] = {}
    for row in rows:
        fid, value = row.get('fingerprint_id'), row.get(stat)
        if not fid or not isinstance(value, (int, float)) or not value > 0:
            continue
        key = arch_key(row)
        if fid not in values:
            values[fid] = {}
            m.fingerprints[fid] = dict(row.get('fingerprint') or {})
        values[fid].setdefault(key, []).append(float(value))
        if isinstance(row.get('noise_pct'), (int, float)):
            noises.setdefault(fid, {}).setdefault(key, []).append(float(row['noise_pct']))
        p10, p90 = row.get('p10_ms'), row.get('p90_ms')
        if isinstance(p10, (int, float)) and isinstance(p90, (int, float)):
            med = row.get('median_ms') or value
            spreads.setdefault(fid, {}).setdefault(key, []).append(100.0 * (p90 - p10) / med)
        if key not in m.archs or (row.get('label') and not m.archs[key].get('label')):
            m.archs[key] = dict(arch=row.get('arch'), input_shape=row.get('input_shape'),
                                batch_size=int(row.get('batch_size', 1)),
                                family=row.get('family'), label=row.get('label'),
                                rule=row.get('rule'))
            labels[key] = arch_label(row)
    order = list(values)
    if fingerprints is not None:
        order = [_resolve_fid(f, list(values)) for f in fingerprints]
    fn = np.min if reduce == 'min' else np.median
    for fid in order:
        m.settings.append(fid)
        m.latency[fid] = {k: float(fn(v)) for k, v in values[fid].items()}
        m.noise[fid], m.noise_source[fid] = _noise(values[fid], noises.get(fid, {}),
                                                   spreads.get(fid, {}))
    m.names = _unique({f: setting_label(m.fingerprints[f]) for f in m.settings})
    used = {k for f in m.settings for k in m.latency[f]}
    m.archs = {k: v for k, v in m.archs.items() if k in used}
    m.labels = _unique({k: labels[k] for k in m.archs})
    return m


def _noise(values: Mapping[str, List[float]], noises: Mapping[str, List[float]],
           spreads: Mapping[str, List[float]]) -> Tuple[Dict[str, float], str]:
    """Per-arch noise (%) of one setting and where it comes from."""
    if noises:
        return {k: float(np.median(v)) for k, v in noises.items()}, 'round-to-round'
    repeated = {k: v for k, v in values.items() if len(v) > 1}
    if repeated:
        return ({k: 100.0 * (max(v) - min(v)) / float(np.median(v))
                 for k, v in repeated.items()}, 'run-to-run')
    if spreads:
        return {k: float(np.median(v)) for k, v in spreads.items()}, 'p10-p90 (within run)'
    return {}, 'unknown'


def discordant_pairs(a: np.ndarray, b: np.ndarray, noise_a: Optional[float],
                     noise_b: Optional[float]) -> Tuple[int, int]:
    """(discordant pairs, those of them within the noise floor) of two latency vectors.

    A pair of archs ranks differently on A and B when their order flips; the flip is within
    the noise floor when, on A or on B, the two latencies differ by no more than that
    setting's noise floor (percent of the smaller latency).
    """
    n, within_noise = 0, 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            if (a[i] - a[j]) * (b[i] - b[j]) >= 0:
                continue
            n += 1
            gap_a = 100.0 * abs(a[i] - a[j]) / min(a[i], a[j])
            gap_b = 100.0 * abs(b[i] - b[j]) / min(b[i], b[j])
            if ((noise_a is not None and gap_a <= noise_a)
                    or (noise_b is not None and gap_b <= noise_b)):
                within_noise += 1
    return n, within_noise


def _resolve_fid(prefix: str, known: List[str]) -> str:
    hits = [f for f in known if f.startswith(prefix)]
    if len(hits) != 1:
        what = 'matches no' if not hits else f'is ambiguous among {len(hits)}'
        raise TransferError(f'--fingerprints: {prefix!r} {what} fingerprint ids in the tables '
                            f'(known: {", ".join(known) or "none"})')
    return hits[0]


def check_matrix(m: LatencyMatrix, min_shared: int = 3) -> None:
    """TransferError unless there are >= 2 settings and >= ``min_shared`` archs on all."""
    if len(m.settings) < 2:
        found = ', '.join(f'{f} ({m.names[f]})' for f in m.settings) or 'none'
        raise TransferError(f'need latency rows of at least 2 (device, backend) fingerprints, '
                            f'found {len(m.settings)}: {found}')
    n = len(m.shared())
    if n < min_shared:
        per = ', '.join(f'{m.names[f]}: {len(m.latency[f])}' for f in m.settings)
        raise TransferError(f'only {n} architecture(s) measured on all {len(m.settings)} '
                            f'fingerprints, need at least {min_shared} (archs per '
                            f'fingerprint: {per})')


def check_scatter(m: LatencyMatrix, scatter: Optional[Sequence[str]] = None) -> None:
    """InputError (``scatter``) unless ``scatter`` is None or two different settings of ``m``."""
    names = [m.names[f] for f in m.settings]
    for name in scatter or []:
        if name not in names:
            raise InputError('scatter', f'unknown setting {name!r} (settings: '
                             f'{", ".join(names)})')
    if scatter and scatter[0] == scatter[1]:
        raise InputError('scatter', f'needs two different settings, got {scatter[0]!r} twice')


def check_report_inputs(tables: Sequence[str], scores: Optional[str] = None,
                        budget_quantiles: Optional[Sequence[float]] = None,
                        budget_ms: Sequence[float] = ()) -> List[float]:
    """Check the report's files and budgets without reading the tables; return the quantiles.

    Args:
        tables: latency-table paths; each must be a file.
        scores: optional score JSON path (:func:`load_scores`); must be a file.
        budget_quantiles: quantile budgets in [0, 1]; None means ``[0.5]``, or ``[]`` when
            ``budget_ms`` gives budgets.
        budget_ms: absolute budgets in ms, each > 0.

    Returns:
        The budget quantiles to report (``budget_quantiles`` with its default applied).

    Raises:
        InputError: naming the first bad argument (``tables``, ``scores``,
            ``budget_quantiles`` or ``budget_ms``) and its value.
    """
    for path in tables:
        if not osp.isfile(path):
            raise InputError('tables', f'file not found: {path}')
    if scores is not None and not osp.isfile(scores):
        raise InputError('scores', f'file not found: {scores}')
    if budget_quantiles is None:
        budget_quantiles = [] if budget_ms else [0.5]
    for q in budget_quantiles:
        if not 0 <= q <= 1:
            raise InputError('budget_quantiles', f'must be in [0, 1], got {q:g}')
    for b in budget_ms:
        if not b > 0:
            raise InputError('budget_ms', f'must be > 0, got {b:g}')
    return [float(q) for q in budget_quantiles]


def read_matrix(tables: Sequence[str], stat: str = 'median_ms', reduce: str = 'min',
                fingerprints: Optional[Sequence[str]] = None,
                scatter: Optional[Sequence[str]] = None) -> LatencyMatrix:
    """The checked :class:`LatencyMatrix` of the rows of ``tables`` (see :func:`collect`).

    Raises:
        TransferError: fewer than 2 settings or 3 shared architectures (:func:`check_matrix`),
            or an unknown ``fingerprints`` entry.
        InputError: ``scatter`` does not name two different settings (:func:`check_scatter`).
    """
    from ..cost.latency_table import read_rows
    m = collect([r for t in tables for r in read_rows(t)], stat, reduce, fingerprints)
    check_matrix(m)
    check_scatter(m, scatter)
    return m


# ---------------------------------------------------------------------------- scores
def arch_flops(entry: Mapping[str, Any]) -> float:
    """Backbone MACs of one image of a matrix arch entry (ViT: closed form; PiT: analytic)."""
    from ..cost.predictor import FEATURES, features
    arch = dict(entry['arch'])
    shape = entry.get('input_shape') or [3, *arch['img_size']]
    arch['img_size'] = list(shape[1:])
    spec = spec_from_dict(arch)
    exact = spec_family(spec).analytic_flops(spec, in_channels=int(shape[0]))
    if exact is not None:
        return float(exact)
    f = features(spec, int(shape[0]))
    return float(sum(f[FEATURES.index(k)] for k in ('linear', 'attention', 'embed')))


def flops_scores(m: LatencyMatrix) -> Dict[str, float]:
    """Score = FLOPs (bigger is better) of every arch of ``m``."""
    return {k: arch_flops(v) for k, v in m.archs.items()}


def load_scores(path: str, m: LatencyMatrix) -> Dict[str, float]:
    """Per-arch scores from JSON: ``{label: score}`` or ``[{"arch": {...}, "score": x}, ...]``.

    Labels are those of the report (``label`` of the rows, else the compact arch text); list
    entries match rows by their arch dict (any input shape / batch). Archs without a score are
    left out of the winner search.
    """
    with open(path, encoding='utf-8') as f:
        data = json.load(f)
    out: Dict[str, float] = {}
    by_label = {v: k for k, v in m.labels.items()}
    if isinstance(data, Mapping):
        for label, score in data.items():
            if label in by_label:
                out[by_label[label]] = float(score)
    elif isinstance(data, list):
        for item in data:
            want = _canonical(item.get('arch'))
            for k, v in m.archs.items():
                if _canonical(v['arch']) == want:
                    out[k] = float(item['score'])
    else:
        raise ValueError(f'{path}: expected a JSON object or list, got {type(data).__name__}')
    if not out:
        raise ValueError(f'{path}: no score matches an architecture of the tables (labels: '
                         f'{", ".join(sorted(by_label))})')
    return out


# ---------------------------------------------------------------------------- report
def _budget_name(kind: str, value: float) -> str:
    return f'q{value:g}' if kind == 'quantile' else f'{value:g}ms'


def _winner(keys: Sequence[str], lat: np.ndarray, scores: Mapping[str, float],
            budget: float) -> Optional[str]:
    feasible = [(scores[k], -lat[i], k) for i, k in enumerate(keys)
                if k in scores and lat[i] <= budget]
    return max(feasible)[2] if feasible else None  # ties: the faster one


def transfer_report(m: LatencyMatrix, scores: Optional[Mapping[str, float]] = None,
                    budget_quantiles: Sequence[float] = (0.5, ),
                    budget_ms: Sequence[float] = (), score_name: str = 'flops',
                    min_shared: int = 3) -> Dict[str, Any]:
    """The JSON-able report: settings, pairwise tau, and winners per budget and setting.

    ``scores`` maps arch keys to a bigger-is-better score (default :func:`flops_scores`).
    A quantile budget is that quantile of each setting's latencies over the shared archs (so it
    differs per setting); an ms budget is the same on every setting.
    """
    check_matrix(m, min_shared)
    for q in budget_quantiles:
        if not 0 <= q <= 1:
            raise ValueError(f'budget quantile must be in [0, 1], got {q}')
    for b in budget_ms:
        if not b > 0:
            raise ValueError(f'budget must be > 0 ms, got {b}')
    scores = dict(flops_scores(m) if scores is None else scores)
    shared = m.shared()
    settings = [dict(id=f, name=m.names[f], fingerprint=m.fingerprints[f],
                     n_archs=len(m.latency[f]), noise_floor_pct=m.noise_floor(f),
                     noise_source=m.noise_source.get(f, 'unknown'),
                     latency_ms_range=[min(m.latency[f].values()),
                                       max(m.latency[f].values())]) for f in m.settings]
    pairs = []
    k = len(m.settings)
    tau = np.eye(k)
    for a in range(k):
        for b in range(a + 1, k):
            fa, fb = m.settings[a], m.settings[b]
            keys = m.shared([fa, fb])
            kt = kendall_with_p(m.vector(fa, keys), m.vector(fb, keys))
            t = kt.tau
            tau[a, b] = tau[b, a] = t
            ratio = m.vector(fb, keys) / m.vector(fa, keys)
            na, nb = m.noise_floor(fa, keys), m.noise_floor(fb, keys)
            disc, disc_noise = discordant_pairs(m.vector(fa, keys), m.vector(fb, keys), na, nb)
            pairs.append(dict(a=m.names[fa], b=m.names[fb], a_id=fa, b_id=fb, n=len(keys),
                              tau=t, tau_p_value=kt.p_value,
                              latency_ratio_b_over_a=[float(ratio.min()),
                                                      float(np.median(ratio)),
                                                      float(ratio.max())],
                              noise_floor_pct=[na, nb], discordant=disc,
                              discordant_within_noise=disc_noise,
                              within_noise=bool(disc == disc_noise)))
    budgets = [('quantile', float(q)) for q in budget_quantiles]
    budgets += [('ms', float(b)) for b in budget_ms]
    out_budgets = []
    for kind, value in budgets:
        per: Dict[str, Any] = {}
        winners: Dict[str, Optional[str]] = {}
        for f in m.settings:
            lat = m.vector(f, shared)
            ms = float(np.quantile(lat, value)) if kind == 'quantile' else value
            win = _winner(shared, lat, scores, ms)
            winners[f] = win
            per[m.names[f]] = dict(
                budget_ms=ms, n_feasible=int(np.sum(lat <= ms)),
                winner=None if win is None else m.labels[win],
                winner_latency_ms=None if win is None else m.latency[f][win],
                winner_score=None if win is None else scores[win])
        transfer = []  # setting A's winner deployed on setting B
        for fa in m.settings:
            for fb in m.settings:
                wa, wb = winners[fa], winners[fb]
                if fa == fb or wa is None:
                    continue
                budget_b = per[m.names[fb]]['budget_ms']
                lat_b = m.latency[fb][wa]
                transfer.append(dict(
                    source=m.names[fa], target=m.names[fb], winner=m.labels[wa],
                    latency_on_target_ms=lat_b, feasible_on_target=bool(lat_b <= budget_b),
                    score_ratio=(None if wb is None or not scores[wb] else
                                 scores[wa] / scores[wb])))
        distinct = sorted({m.labels[w] if w else '(none)' for w in winners.values()})
        out_budgets.append(dict(name=_budget_name(kind, value), kind=kind, value=value,
                                per_setting=per, winners=distinct,
                                winner_changes=len(distinct) > 1, transfer=transfer))
    archs = [dict(label=m.labels[key], score=scores.get(key), arch=m.archs[key]['arch'],
                  input_shape=m.archs[key]['input_shape'], rule=m.archs[key].get('rule'),
                  latency_ms={m.names[f]: m.latency[f].get(key) for f in m.settings})
             for key in m.archs]
    return dict(stat=m.stat, score=score_name, n_shared=len(shared), settings=settings,
                tau_matrix=dict(names=[m.names[f] for f in m.settings], values=tau.tolist()),
                pairs=pairs, budgets=out_budgets, archs=archs)


def _fmt(value: Any, spec: str = '.2f') -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return '-'
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def to_markdown(report: Mapping[str, Any], title: str = 'Device-transfer report') -> str:
    """Markdown tables: settings, tau matrix and pairs, winners and transfers per budget."""
    names = report['tau_matrix']['names']
    lines = [f'# {title}', '',
             f"{report['n_shared']} architectures measured on all {len(names)} settings; "
             f"latency statistic `{report['stat']}`; score `{report['score']}` (bigger is "
             'better).', '', '## Settings', '',
             '| setting | fingerprint id | device | archs | latency ms (min-max) | '
             'noise floor % |', '|---|---|---|---:|---|---|']
    for s in report['settings']:
        lo, hi = s['latency_ms_range']
        noise = s.get('noise_floor_pct')
        noise_text = '-' if noise is None else f"{noise:.1f} ({s.get('noise_source')})"
        lines.append(f"| {s['name']} | `{s['id']}` | {s['fingerprint'].get('device', '?')} | "
                     f"{s['n_archs']} | {lo:.2f}-{hi:.2f} | {noise_text} |")
    lines += ['', '## Kendall tau-b of the latency rankings', '',
              '| | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
    for name, row in zip(names, report['tau_matrix']['values']):
        lines.append(f'| {name} | ' + ' | '.join(_fmt(v, '.3f') for v in row) + ' |')
    lines += ['', 'A rank difference (a pair of archs ordered differently on A and B) is '
              '*within the noise floor* when the two latencies differ by no more than the '
              "setting's noise floor on A or on B.", '',
              '| A | B | shared archs | tau | tau p-value | latency B/A (min / median / max) | '
              'noise floor % (A / B) | discordant pairs (within noise) | rank differences |',
              '|---|---|---:|---:|---:|---|---|---|---|']
    for p in report['pairs']:
        r = p['latency_ratio_b_over_a']
        na, nb = p.get('noise_floor_pct') or (None, None)
        disc, within = p.get('discordant'), p.get('discordant_within_noise')
        verdict = ('none' if not disc else 'all within noise' if p.get('within_noise') else
                   f'{disc - within} beyond noise')
        lines.append(f"| {p['a']} | {p['b']} | {p['n']} | {_fmt(p['tau'], '.3f')} | "
                     f"{_fmt(p.get('tau_p_value'), '.3g')} | "
                     f'{r[0]:.2f} / {r[1]:.2f} / {r[2]:.2f} | {_fmt(na, ".1f")} / '
                     f'{_fmt(nb, ".1f")} | {_fmt(disc, "d")} ({_fmt(within, "d")}) | '
                     f'{verdict} |')
    for b in report['budgets']:
        what = (f"the {b['value']:g} quantile of each setting's latencies" if b['kind'] ==
                'quantile' else f"{b['value']:g} ms on every setting")
        verdict = ('**winner changes**: ' + ', '.join(b['winners']) if b['winner_changes']
                   else f"same winner everywhere: {b['winners'][0]}")
        lines += ['', f"## Budget {b['name']} ({what})", '', verdict, '',
                  '| setting | budget ms | feasible | winner | its ms | its score |',
                  '|---|---:|---:|---|---:|---:|']
        for name, s in b['per_setting'].items():
            lines.append(f"| {name} | {s['budget_ms']:.2f} | {s['n_feasible']} | "
                         f"{_fmt(s['winner'])} | {_fmt(s['winner_latency_ms'])} | "
                         f"{_fmt(s['winner_score'], '.4g')} |")
        moved = [t for t in b['transfer'] if t['score_ratio'] != 1 or not
                 t['feasible_on_target']]
        if moved:
            lines += ['', 'Winners that do not transfer (source winner run on the target):', '',
                      '| source | target | winner | ms on target | within target budget | '
                      'score / target winner |', '|---|---|---|---:|---|---:|']
            for t in moved:
                lines.append(f"| {t['source']} | {t['target']} | {t['winner']} | "
                             f"{t['latency_on_target_ms']:.2f} | "
                             f"{'yes' if t['feasible_on_target'] else 'no'} | "
                             f"{_fmt(t['score_ratio'], '.3f')} |")
    lines += ['', '## Architectures', '',
              '| arch | score | ' + ' | '.join(f'{n} ms' for n in names) + ' |',
              '|---|---:|' + '---:|' * len(names)]
    for a in report['archs']:
        lines.append(f"| {a['label']} | {_fmt(a['score'], '.4g')} | "
                     + ' | '.join(_fmt(a['latency_ms'][n]) for n in names) + ' |')
    return '\n'.join(lines) + '\n'


def _pick_scatter(report: Mapping[str, Any]) -> Tuple[str, str]:
    pairs = [p for p in report['pairs'] if not np.isnan(p['tau'])] or report['pairs']
    worst = min(pairs, key=lambda p: p['tau'] if not np.isnan(p['tau']) else 2.0)
    return worst['a'], worst['b']


def plot_report(report: Mapping[str, Any], path: str,
                scatter: Optional[Tuple[str, str]] = None) -> Tuple[str, str]:
    """PNG: tau heatmap (left) and latency on setting A vs B (right), written atomically.

    ``scatter`` names the two settings; default the pair with the lowest tau. Returns it.
    """
    plt = pyplot()
    names = report['tau_matrix']['names']
    tau = np.array(report['tau_matrix']['values'], dtype=np.float64)
    a, b = scatter or _pick_scatter(report)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(6 + 0.6 * len(names), 5.2))
    im = ax0.imshow(tau, vmin=-1, vmax=1, cmap='RdBu')
    ax0.set_xticks(range(len(names)), names, rotation=45, ha='right', fontsize=7)
    ax0.set_yticks(range(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            dark = not np.isnan(tau[i, j]) and abs(tau[i, j]) > 0.6
            ax0.text(j, i, _fmt(tau[i, j], '.2f'), ha='center', va='center', fontsize=8,
                     color='white' if dark else 'black')
    ax0.set_title('Kendall tau-b of latency ranks')
    fig.colorbar(im, ax=ax0, fraction=0.046)
    pts = [(r['latency_ms'][a], r['latency_ms'][b], r['label']) for r in report['archs']
           if r['latency_ms'].get(a) is not None and r['latency_ms'].get(b) is not None]
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    ax1.scatter(xs, ys, s=18)
    lo, hi = min(xs.min(), ys.min()) * 0.9, max(xs.max(), ys.max()) * 1.1
    ax1.plot([lo, hi], [lo, hi], 'k--', lw=0.7, label='y = x')
    ax1.legend(loc='upper left', fontsize=7)
    for x, y, label in pts:
        ax1.annotate(label, (x, y), fontsize=6, xytext=(3, 2), textcoords='offset points')
    pair = next(p for p in report['pairs'] if {p['a'], p['b']} == {a, b})
    ax1.set(xscale='log', yscale='log', xlabel=f'{a} latency (ms)',
            ylabel=f'{b} latency (ms)', title=f"tau = {_fmt(pair['tau'], '.3f')}, "
            f'n = {len(pts)}')
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    for axis in (ax1.xaxis, ax1.yaxis):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return a, b


def write_report(report: Mapping[str, Any], out_dir: str, name: str = 'report',
                 scatter: Optional[Tuple[str, str]] = None) -> Dict[str, str]:
    """Write ``<name>.md``, ``<name>.json`` and ``<name>.png`` into ``out_dir`` atomically."""
    paths = {ext: osp.join(out_dir, f'{name}.{ext}') for ext in ('md', 'json', 'png')}
    plot_report(report, paths['png'], scatter)
    atomic_write(paths['json'], json.dumps(report, indent=2, default=_json_default) + '\n')
    atomic_write(paths['md'], to_markdown(report))
    return paths


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f'not JSON serialisable: {type(obj).__name__}')
