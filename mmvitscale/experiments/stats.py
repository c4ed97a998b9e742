"""The statistics of a study: intervals, paired differences, verdict words, rank agreement.

The one place in the package that computes Kendall's tau and ranks; ``search``, ``cost`` and
the study tools call these. Conventions (``docs/studies.md``):

* an arm's mean gets a Student-t interval over its per-seed values;
* two arms sharing their seeds are compared by the t interval of the per-seed differences
  (the paired design: the difference per seed cancels data-order noise);
* the verdict word follows that interval: ``better`` / ``worse`` only when it excludes 0,
  otherwise ``inconclusive`` with the interval's half-width (the study's power);
* when a study makes a family of ``m`` comparisons (the transfer study: the rules against the
  baseline on one task, from which it names a winner; the seeded studies: all comparisons on
  one metric), the verdict follows the Bonferroni interval at confidence
  ``1 - (1 - 0.95) / m``, so that all ``m`` verdict intervals hold together with probability
  >= 95% (:func:`compare`); the plain 95% interval is reported beside it.
"""
import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..stats import ranks  # noqa: F401  (the one ranking, floor 1: search uses it too)

VERDICTS = ('better', 'worse', 'inconclusive')
CORRECTIONS = ('bonferroni', 'none')


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its two-sided Student-t interval (``nan`` bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out['half_width'] = self.half_width
        return out


def _values(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f'{name}: needs at least one value, got none')
    if not np.all(np.isfinite(arr)):
        raise ValueError(f'{name}: values must be finite, got {arr.tolist()}')
    return arr


@functools.lru_cache(maxsize=1024)
def t_quantile(confidence: float, dof: int) -> float:
    """Two-sided Student-t critical value: ``t`` with ``P(|T_dof| <= t) = confidence``
    (cached: resampling studies ask for the same few values many times)."""
    from scipy.stats import t as student_t
    if not 0 < confidence < 1:
        raise ValueError(f'confidence must be in (0, 1), got {confidence}')
    return float(student_t.ppf(0.5 + confidence / 2, dof))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval of ``values`` (one per seed); bounds ``nan`` for one value."""
    arr = _values(values, 't_interval')
    mean = float(arr.mean())
    if arr.size < 2:
        return Interval(mean, math.nan, math.nan, 1, math.nan, confidence)
    sd = float(arr.std(ddof=1))
    half = t_quantile(confidence, arr.size - 1) * sd / math.sqrt(arr.size)
    return Interval(mean, mean - half, mean + half, int(arr.size), sd, confidence)


def paired_differences(treatment: Sequence[float], baseline: Sequence[float]) -> List[float]:
    """Per-seed ``treatment - baseline``; both lists in the same seed order."""
    a, b = _values(treatment, 'treatment'), _values(baseline, 'baseline')
    if a.shape != b.shape:
        raise ValueError(f'paired values need one per seed on both sides, got {a.size} '
                         f'treatment vs {b.size} baseline values')
    return (a - b).tolist()


def paired_interval(treatment: Sequence[float], baseline: Sequence[float],
                    confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean per-seed difference ``treatment - baseline``."""
    return t_interval(paired_differences(treatment, baseline), confidence)


def paired_t_test(treatment: Sequence[float], baseline: Sequence[float]) -> Dict[str, float]:
    """Two-sided paired t test (``scipy.stats.ttest_rel``): ``statistic``, ``p_value``, ``df``.

    ``nan`` for fewer than 2 pairs or differences that are all equal.
    """
    from scipy.stats import t as student_t
    d = np.asarray(paired_differences(treatment, baseline))
    if d.size < 2:
        return dict(statistic=math.nan, p_value=math.nan, df=0)
    sd = d.std(ddof=1)
    if sd == 0:
        return dict(statistic=math.nan, p_value=math.nan, df=int(d.size - 1))
    stat = float(d.mean() / (sd / math.sqrt(d.size)))
    return dict(statistic=stat, p_value=float(2 * student_t.sf(abs(stat), d.size - 1)),
                df=int(d.size - 1))


def fmt_tau(v: Optional[float]) -> str:
    """A Kendall tau for reports: ``+0.123``, or ``n/a`` when missing or not finite."""
    return 'n/a' if v is None or not math.isfinite(v) else f'{v:+.3f}'


def percent(confidence: float) -> str:
    """``0.95 -> '95%'``, ``0.98333 -> '98.3%'`` (a confidence level as people write it)."""
    text = f'{100 * confidence:.1f}'
    return (text[:-2] if text.endswith('.0') else text) + '%'


def family_confidence(confidence: float, family_size: int,
                      correction: str = 'bonferroni') -> float:
    """Per-interval confidence that makes ``family_size`` intervals hold together with
    probability >= ``confidence`` (Bonferroni: ``1 - (1 - confidence) / m``); ``'none'``:
    ``confidence`` itself."""
    if correction not in CORRECTIONS:
        raise ValueError(f'correction must be one of {CORRECTIONS}, got {correction!r}')
    if not 0 < confidence < 1:
        raise ValueError(f'confidence must be in (0, 1), got {confidence}')
    if isinstance(family_size, bool) or not isinstance(family_size, int) or family_size < 1:
        raise ValueError(f'family_size must be an integer >= 1, got {family_size!r}')
    if correction == 'none' or family_size == 1:
        return confidence
    return 1 - (1 - confidence) / family_size


def verdict(diff: Interval, unit: str = 'points', digits: int = 2,
            family: str = '') -> Dict[str, Any]:
    """The verdict word an interval of a difference allows, and a sentence saying it.

    ``better`` when the interval lies above 0, ``worse`` when below, ``inconclusive`` when it
    holds 0 or cannot be computed (one seed); the text gives the mean difference and interval,
    or the half-width (the smallest difference this design could detect). ``family`` names
    the correction behind the interval's level (e.g. ``'Bonferroni, 3 comparisons'``).
    """
    f = f'{{:+.{digits}f}}'
    if diff.n < 2 or not math.isfinite(diff.low):
        return dict(verdict='inconclusive', half_width=math.nan,
                    text=f'inconclusive: {f.format(diff.mean)} {unit} from {diff.n} seed; '
                         'no interval (run k >= 3 seeds)')
    level = percent(diff.confidence) + (f' ({family})' if family else '')
    span = (f'{f.format(diff.mean)} {unit}, {level} interval '
            f'{f.format(diff.low)} to {f.format(diff.high)}')
    if diff.low > 0:
        word = 'better'
    elif diff.high < 0:
        word = 'worse'
    else:
        word = 'inconclusive'
        span += f' (+-{diff.half_width:.{digits}f} {unit})'
    return dict(verdict=word, half_width=diff.half_width, text=f'{word}: {span}')


def compare(diffs: Sequence[float], confidence: float = 0.95, family_size: int = 1,
            correction: str = 'bonferroni', unit: str = 'points',
            digits: int = 2) -> Dict[str, Any]:
    """One paired comparison from its per-seed differences: what every study reports.

    Returns ``diff_mean``; ``ci95`` / ``half_width``: the plain ``confidence`` interval;
    ``ci_family`` / ``verdict_half_width`` / ``family_confidence``: the interval the verdict
    follows, corrected for the ``family_size`` comparisons of its family
    (:func:`family_confidence`); ``verdict`` and its sentence ``text``; the paired t test's
    ``p_value`` and ``p_adjusted`` (Bonferroni: ``min(1, m p)``). Interval bounds are ``nan``
    with fewer than 2 seeds.
    """
    conf_f = family_confidence(confidence, family_size, correction)
    iv = t_interval(diffs, confidence)
    fam = t_interval(diffs, conf_f) if conf_f != confidence else iv
    note = (f'{correction.capitalize()}, {family_size} comparisons'
            if conf_f != confidence else '')
    word = verdict(fam, unit=unit, digits=digits, family=note)
    p = paired_t_test(diffs, [0.0] * len(diffs))['p_value']
    m = family_size if correction == 'bonferroni' else 1
    return dict(diff_mean=iv.mean, ci95=[iv.low, iv.high], half_width=iv.half_width,
                ci_family=[fam.low, fam.high], verdict_half_width=fam.half_width,
                family_confidence=conf_f, family_size=int(family_size), correction=correction,
                verdict=word['verdict'], text=word['text'], p_value=p,
                p_adjusted=min(1.0, p * m) if math.isfinite(p) else p)


def power_text(half_width: float, unit: str = 'points', n: Optional[int] = None,
               interval: str = '95% interval half-width') -> str:
    """A sentence stating the smallest difference a design can detect."""
    if not math.isfinite(half_width):
        return 'no interval with fewer than 2 seeds: this design cannot detect any difference'
    seeds = f' with {n} seeds' if n else ''
    return (f'differences smaller than about {half_width:.2f} {unit} are not detectable'
            f'{seeds} ({interval})')


# ---------------------------------------------------------------------------- kendall
@dataclass(frozen=True)
class KendallResult:
    """Kendall's tau-b, its two-sided p-value and the number of pairs of values."""

    tau: float
    p_value: float
    n: int
    method: str  # 'exact', 'asymptotic' or 'undefined'

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _tie_sums(values: np.ndarray):
    _, counts = np.unique(values, return_counts=True)
    c = counts[counts > 1].astype(np.int64)
    return (int((c * (c - 1) // 2).sum()), int((c * (c - 1) * (c - 2)).sum()),
            int((c * (c - 1) * (2 * c + 5)).sum()))


def _kendall_p_exact(n: int, concordant: int) -> float:
    """Two-sided exact p-value without ties: permutations with at most ``min(c, N - c)``
    inversions (Mahonian numbers, exact integers), doubled."""
    total = n * (n - 1) // 2
    c = min(concordant, total - concordant)
    if 4 * c == n * (n - 1):
        return 1.0
    counts = [1] + [0] * c  # permutations of 1 element by inversion count, truncated at c
    for j in range(2, n + 1):  # add element j: 0..j-1 new inversions
        prefix, acc = [], 0
        for v in counts:
            acc += v
            prefix.append(acc)
        counts = [prefix[k] - (prefix[k - j] if k >= j else 0) for k in range(c + 1)]
    return min(1.0, 2 * sum(counts) / math.factorial(n))


def _tau_b(a: np.ndarray, b: np.ndarray):
    """Kendall's tau-b of two equally long float arrays (``nan`` when a side is constant), with
    its parts: ``concordant - discordant``, discordant pairs, tied pairs in ``a`` / ``b`` and
    all pairs."""
    i, j = np.triu_indices(int(a.size), 1)
    dx, dy = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    total = int(i.size)
    xtie, ytie = int(np.count_nonzero(dx == 0)), int(np.count_nonzero(dy == 0))
    s = float(np.sum(dx * dy))  # concordant - discordant
    discordant = int(np.count_nonzero(dx * dy < 0))
    if xtie == total or ytie == total:
        return math.nan, s, discordant, xtie, ytie, total
    tau = float(np.clip(s / math.sqrt(total - xtie) / math.sqrt(total - ytie), -1.0, 1.0))
    return tau, s, discordant, xtie, ytie, total


def kendall_interval(x: Sequence[float], y: Sequence[float], confidence: float = 0.95,
                     draws: int = 2000, seed: int = 0) -> Dict[str, Any]:
    """Percentile bootstrap interval of Kendall's tau-b over the pairs ``(x[i], y[i])``.

    Each draw resamples the pairs with replacement (the items, e.g. architectures, are the
    sampling unit) and recomputes tau-b; draws where a side is constant are left out (their
    count is ``undefined``). Returns ``low``, ``high``, ``confidence``, ``draws`` and
    ``undefined``; ``nan`` bounds with fewer than 3 pairs, a nan value or a constant side.
    """
    if not 0 < confidence < 1:
        raise ValueError(f'confidence must be in (0, 1), got {confidence}')
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f'draws must be a positive integer, got {draws!r}')
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f'kendall_interval: {a.size} vs {b.size} values')
    out = dict(low=math.nan, high=math.nan, confidence=confidence, draws=draws,
               undefined=draws)
    if a.size < 3 or np.isnan(a).any() or np.isnan(b).any() or math.isnan(_tau_b(a, b)[0]):
        return out
    rng = np.random.default_rng(seed)
    taus = np.array([_tau_b(a[k], b[k])[0] for k in rng.integers(0, a.size, (draws, a.size))])
    taus = taus[~np.isnan(taus)]
    out['undefined'] = int(draws - taus.size)
    if taus.size:
        alpha = 1 - confidence
        out['low'], out['high'] = (float(v) for v in np.quantile(taus, [alpha / 2, 1 - alpha / 2]))
    return out


def tau_over_seeds(x: Sequence[float], per_seed: Sequence[Sequence[float]],
                   draws: int = 2000, seed: int = 0) -> Dict[str, Any]:
    """How a score ``x`` of items ranks them against a metric measured once per training seed
    (``per_seed[j][i]``: item ``i`` under seed ``j``).

    Returns ``tau``, ``p`` and ``n`` (:func:`kendall_tau` against the seed mean), its 95%
    bootstrap interval over items ``ci95`` (:func:`kendall_interval`, ``draws``, ``seed``) and
    ``per_seed``, the tau against each seed's metric alone.
    """
    rows = [list(map(float, v)) for v in per_seed]
    if not rows or any(len(v) != len(x) for v in rows):
        raise ValueError(f'tau_over_seeds: every seed needs {len(x)} values, got '
                         f'{[len(v) for v in rows]}')
    mean = [sum(col) / len(col) for col in zip(*rows)]
    k = kendall_tau(x, mean)
    iv = kendall_interval(x, mean, draws=draws, seed=seed)
    return dict(tau=k.tau, p=k.p_value, n=k.n, ci95=[iv['low'], iv['high']],
                per_seed=[kendall_tau(x, v).tau for v in rows])


def seed_agreement(per_seed: Sequence[Sequence[float]], seeds: Sequence[int]
                   ) -> Dict[str, Any]:
    """How alike two training seeds rank the items: for every pair of seeds the Kendall tau
    (``tau``, ``p``, ``n``) of their metrics (``per_seed[j][i]``: item ``i`` under
    ``seeds[j]``), and ``mean_tau`` over the pairs (``nan`` with one seed). No score of the
    items can be expected to agree with one training better than another training does."""
    if len(per_seed) != len(seeds):
        raise ValueError(f'seed_agreement: {len(per_seed)} value lists for {len(seeds)} seeds')
    pairs = []
    for a in range(len(seeds)):
        for b in range(a + 1, len(seeds)):
            k = kendall_tau(per_seed[a], per_seed[b])
            pairs.append(dict(seeds=[seeds[a], seeds[b]], tau=k.tau, p=k.p_value, n=k.n))
    taus = [p['tau'] for p in pairs if math.isfinite(p['tau'])]
    return dict(pairs=pairs, mean_tau=sum(taus) / len(taus) if taus else math.nan)


def kendall_tau(x: Sequence[float], y: Sequence[float], method: str = 'auto') -> KendallResult:
    """Kendall's tau-b of two paired samples and its two-sided p-value, as scipy computes them.

    ``method='auto'``: the exact null distribution without ties when ``n <= 33`` (or the
    ranking is at most one swap from perfect), else the normal approximation with tie
    corrections. ``nan`` when either side is constant, holds a nan, or has fewer than 2 values.
    """
    if method not in ('auto', 'exact', 'asymptotic'):
        raise ValueError(f"method must be 'auto', 'exact' or 'asymptotic', got {method!r}")
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f'kendall_tau: {a.size} vs {b.size} values')
    n = int(a.size)
    undefined = KendallResult(math.nan, math.nan, n, 'undefined')
    if n < 2 or np.isnan(a).any() or np.isnan(b).any():
        return undefined
    tau, s, discordant, xtie, ytie, total = _tau_b(a, b)
    if math.isnan(tau):
        return undefined
    ties = xtie > 0 or ytie > 0
    if method == 'exact' and ties:
        raise ValueError('kendall_tau: ties found, the exact method cannot be used')
    if method == 'auto':
        exact = not ties and (n <= 33 or min(discordant, total - discordant) <= 1)
        method = 'exact' if exact else 'asymptotic'
    if method == 'exact':
        return KendallResult(tau, _kendall_p_exact(n, total - discordant), n, 'exact')
    _, x0, x1 = _tie_sums(a)
    _, y0, y1 = _tie_sums(b)
    m = n * (n - 1.0)
    var = ((m * (2 * n + 5) - x1 - y1) / 18 + (2 * xtie * ytie) / m
           + (x0 * y0 / (9 * m * (n - 2)) if n > 2 else 0.0))
    z = s / math.sqrt(var)
    return KendallResult(tau, float(math.erfc(abs(z) / math.sqrt(2))), n, 'asymptotic')


# ---------------------------------------------------------------------------- effect transfer
TRANSFER_VERDICTS = ('transfers', 'reverses', 'inconclusive')


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two equally long arrays (``nan`` when a side is constant)."""
    da, db = a - a.mean(), b - b.mean()
    den = math.sqrt(float((da * da).sum()) * float((db * db).sum()))
    return float(np.clip((da * db).sum() / den, -1.0, 1.0)) if den > 0 else math.nan


def effect_transfer(source: Dict[str, Sequence[float]], target: Dict[str, Sequence[float]],
                    confidence: float = 0.95, draws: int = 2000, seed: int = 0
                    ) -> Dict[str, Any]:
    """Do the rules' effects on a source task carry over to a target task?

    ``source[rule]`` / ``target[rule]``: the rule's per-seed paired differences to the
    baseline, every list in the same seed order (the same seeds on both tasks). The point
    estimates are Kendall's tau-b and Pearson's r between the rules' mean effects on the two
    tasks. Their intervals resample the *seeds* (the sampling unit of a training study) with
    replacement, the same draw on both tasks (paired), recompute every rule's mean effect and
    the two coefficients, and take percentiles; draws where a side is constant are left out
    (``undefined``). The verdict follows the tau interval: ``transfers`` when it lies above 0,
    ``reverses`` below, else ``inconclusive`` (also with fewer than 3 rules or 2 seeds).
    """
    if not 0 < confidence < 1:
        raise ValueError(f'confidence must be in (0, 1), got {confidence}')
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f'draws must be a positive integer, got {draws!r}')
    rules = [r for r in source if r in target]
    lengths = {len(source[r]) for r in rules} | {len(target[r]) for r in rules}
    if len(lengths) > 1:
        raise ValueError(f'effect_transfer: every rule needs the same seeds on both tasks, '
                         f'got {sorted(lengths)} values')
    nan2 = [math.nan, math.nan]
    out: Dict[str, Any] = dict(rules=rules, n_rules=len(rules), kendall_tau=math.nan,
                               pearson_r=math.nan, ci95=dict(kendall_tau=nan2, pearson_r=nan2),
                               confidence=confidence, draws=draws, undefined=draws,
                               method='bootstrap over seeds (paired), percentile',
                               verdict='inconclusive', source_effects=[], target_effects=[])
    if len(rules) < 2:
        return out
    s = np.asarray([source[r] for r in rules], dtype=np.float64)
    t = np.asarray([target[r] for r in rules], dtype=np.float64)
    k = s.shape[1]
    sm, tm = s.mean(axis=1), t.mean(axis=1)
    out.update(kendall_tau=_tau_b(sm, tm)[0], pearson_r=_pearson(sm, tm),
               source_effects=sm.tolist(), target_effects=tm.tolist(), n_seeds=k)
    if len(rules) < 3 or k < 2:
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, (draws, k))
    taus, rs = [], []
    for row in idx:
        a, b = s[:, row].mean(axis=1), t[:, row].mean(axis=1)
        taus.append(_tau_b(a, b)[0])
        rs.append(_pearson(a, b))
    taus_a, rs_a = np.asarray(taus), np.asarray(rs)
    ok = ~np.isnan(taus_a) & ~np.isnan(rs_a)
    out['undefined'] = int(draws - ok.sum())
    if ok.any():
        q = [(1 - confidence) / 2, 1 - (1 - confidence) / 2]
        out['ci95'] = dict(kendall_tau=[float(v) for v in np.quantile(taus_a[ok], q)],
                           pearson_r=[float(v) for v in np.quantile(rs_a[ok], q)])
        lo, hi = out['ci95']['kendall_tau']
        out['verdict'] = 'transfers' if lo > 0 else 'reverses' if hi < 0 else 'inconclusive'
    return out
