"""Budgeted scaling search: enumerate scaling rules, keep those under a budget, score, rank.

Pipeline (:func:`run_search`):

1. :func:`enumerate_candidates`: the cartesian product of multiplier grids (``depth_mult``,
   ``width_mult``, ...; a multiplier of 1 is left out of the rule) applied to a base arch with
   :func:`~mmvitscale.scaling.scale_vit` / ``scale_pit``; infeasible rules are skipped and rules
   resolving to the same architecture are kept once (the first, i.e. the simplest).
2. :func:`attach_costs` + :func:`filter_budget`: cost is ``flops`` (MACs of the backbone:
   closed-form :func:`~mmvitscale.cost.vit_flops` for ViT, :func:`~mmvitscale.cost.get_complexity`
   for PiT) or ``latency`` (ms predicted by a :class:`~mmvitscale.cost.predictor.LatencyPredictor`).
   No candidate under the budget raises :class:`BudgetError` before any scoring.
3. :func:`score_candidates`: ``'flops'`` (score = FLOPs, bigger is better; a quick baseline)
   or ``'proxies'`` (As-ViT, training-free: NTK condition number, lower is better, and length
   distortion, higher is better, each ranked over the feasible set; the score is
   ``1 - (rank_ntk + rank_ld) / (2 (n - 1))`` in ``[0, 1]``, higher is better). Proxies run on a
   backbone built with ``final_norm=False`` / ``out_type='avg_featmap'`` (a final LayerNorm makes
   the summed-feature NTK degenerate, see :mod:`.proxies`) at the candidate's own resolution.
4. :func:`rank_candidates` and :func:`pareto_front` (lowest cost, highest score).
5. Reports: :func:`candidates_markdown`, :func:`measured_markdown`, :func:`plot_pareto`.

Attention type as a search dimension: ``attn_types=('softmax', 'linear_angular')`` crosses the
multiplier grids with the attention types; each candidate's rule then carries ``attn_type``
(the backbones read it from ``scaling``, see
:func:`~mmvitscale.models.linear_attention.split_attn_rule`), FLOPs count that attention
(linear-angular with the depthwise conv of ``BaseSpec.linear_kernel_size``) and a
linear-angular candidate whose grid is too small for the kernel is infeasible.
``attn_types=None`` (default) leaves ``attn_type`` out of the rules (softmax, as before).
"""
import itertools
import math
import os
import os.path as osp
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

# ranks: 0-based, best first, ties share their mean rank, non-finite values last (the one
# implementation, mmvitscale.stats; re-exported here)
from ..stats import ranks  # noqa: F401
from ..errors import creatable_error, positive_number_error
from ..families import family_names, family_of_dict, get_family
from ..fileio import atomic_write, json_ready, pyplot, save_figure


SEARCH_FAMILIES = family_names('image', searchable=True)  # families with a multiplier grid
SCORERS = ('proxies', 'flops')
COSTS = ('flops', 'latency')
UNITS = {'flops': 'GFLOPs', 'latency': 'ms'}
DEFAULT_GRIDS: Dict[str, Dict[str, Tuple[float, ...]]] = {
    name: dict(get_family(name).search_grid) for name in SEARCH_FAMILIES}
ATTN_TYPES = ('softmax', 'linear_angular')  # as mmvitscale.models.linear_attention
Progress = Optional[Callable[[int, int], None]]


class BudgetError(ValueError):
    """No candidate meets the budget."""


@dataclass
class Candidate:
    """One scaling rule, its resolved architecture, cost and score."""

    rule: Dict[str, Any]  # multipliers, plus ``attn_type`` when searched
    arch: Dict[str, Any]
    flops: Optional[int] = None
    latency_ms: Optional[float] = None
    score: Optional[float] = None
    metrics: Dict[str, float] = field(default_factory=dict)

    def cost(self, kind: str) -> float:
        value = self.flops if kind == 'flops' else self.latency_ms
        if value is None:
            raise ValueError(f'candidate {self.rule} has no {kind} cost')
        return float(value)

    @property
    def attn_type(self) -> str:
        return self.rule.get('attn_type', 'softmax')

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class BaseSpec:
    """The base architecture a search scales: family, arch (preset or dict) and input;
    ``linear_kernel_size`` is the backbone's for linear-angular candidates;
    ``backbone_kwargs`` are the task config's other backbone arguments (e.g.
    ``with_cls_token=False``), so candidates are built and costed as the task builds them."""

    family: str = 'vit'
    arch: Any = 'deit-tiny'
    img_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    linear_kernel_size: int = 9
    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_family(self.family, among=family_names('image', searchable=True))
        for name in ('img_size', 'patch_size', 'in_channels', 'linear_kernel_size'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value!r}')
        if self.linear_kernel_size % 2 == 0:
            raise ValueError(f'linear_kernel_size must be odd, got {self.linear_kernel_size}')
        if not isinstance(self.backbone_kwargs, Mapping):
            raise ValueError(f'backbone_kwargs must be a dict, got {self.backbone_kwargs!r}')
        clash = sorted({'arch', 'img_size', 'patch_size', 'in_channels', 'scaling', 'type'}
                       & set(self.backbone_kwargs))
        if clash:
            raise ValueError(f'backbone_kwargs must not set {clash}: they are the search\'s')

    def resolve(self, rule: Mapping[str, Any]):
        """The architecture of ``rule`` (its ``attn_type``, if any, does not shape it)."""
        family = get_family(self.family)
        return family.resolve(self.arch, self.img_size,
                              self.patch_size if family.patch_size_arg else None, rule)

    def check_attn(self, rule: Mapping[str, Any], arch) -> None:
        """ValueError unless the rule's attention type (if any) is known and, for
        linear-angular attention, ``linear_kernel_size`` fits every token grid of ``arch``."""
        from ..models.linear_attention import check_attn_type, check_kernel_size
        attn = check_attn_type(rule.get('attn_type', 'softmax'), 'scaling.attn_type')
        if attn == 'linear_angular':
            for grid in get_family(self.family).token_grids(arch):
                check_kernel_size(self.linear_kernel_size, grid)

    def backbone_cfg(self, rule: Mapping[str, Any], **kwargs) -> Dict[str, Any]:
        """Registry config of the scaled backbone (``kwargs`` override, e.g. ``out_type``)."""
        family = get_family(self.family)
        cfg = family.backbone_cfg(self.arch, self.img_size,
                                  self.patch_size if family.patch_size_arg else None, rule,
                                  in_channels=self.in_channels)
        if rule.get('attn_type', 'softmax') != 'softmax':
            cfg['linear_kernel_size'] = self.linear_kernel_size
        cfg.update(self.backbone_kwargs)
        cfg.update(kwargs)
        return cfg

    def build(self, rule: Mapping[str, Any], **kwargs):
        from ..cost.backends import build_model
        return build_model(self.backbone_cfg(rule, **kwargs))


# ---------------------------------------------------------------------------- enumerate
def check_grids(grids: Mapping[str, Sequence[float]], family: str) -> Dict[str, Tuple[float]]:
    """ValueError naming the key / value of a bad grid (unknown knob, empty, non-positive)."""
    known = get_family(family).rule_keys
    if not isinstance(grids, Mapping) or not grids:
        raise ValueError(f'grids must be a non-empty dict of knob -> values, got {grids!r}')
    out = {}
    for key, values in grids.items():
        if key not in known:
            raise ValueError(f'grids: unknown {family} scaling key {key!r}; known keys: '
                             f'{sorted(known)}')
        values = (values, ) if isinstance(values, (int, float)) else tuple(values)
        if not values:
            raise ValueError(f'grids: {key} has no values')
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f'grids: {key} values must be positive numbers, got {v!r}')
        out[key] = tuple(dict.fromkeys(values))
    return out


def check_attn_types(attn_types: Optional[Sequence[str]]) -> Optional[Tuple[str, ...]]:
    """``None`` (attention not searched) or the distinct, known attention types."""
    if attn_types is None:
        return None
    types = (attn_types, ) if isinstance(attn_types, str) else tuple(attn_types)
    if not types:
        raise ValueError('attn_types must name at least one attention type')
    for t in types:
        if t not in ATTN_TYPES:
            raise ValueError(f'attn_types: unknown attention type {t!r}; known: {ATTN_TYPES}')
    return tuple(dict.fromkeys(types))


def enumerate_candidates(base: BaseSpec, grids: Optional[Mapping[str, Sequence[float]]] = None,
                         attn_types: Optional[Sequence[str]] = None
                         ) -> Tuple[List[Candidate], int]:
    """Distinct feasible candidates of the grid product (crossed with ``attn_types`` when
    given: every rule then carries ``attn_type``), and how many rules were infeasible."""
    if grids is None:
        grids = get_family(base.family).search_grid
    grids = check_grids(grids, base.family)
    types = check_attn_types(attn_types)
    keys = list(grids)
    seen, out, infeasible = set(), [], 0
    for attn in (types or (None, )):
        for values in itertools.product(*(grids[k] for k in keys)):
            rule: Dict[str, Any] = {k: v for k, v in zip(keys, values)
                                    if not (k.endswith('_mult') and v == 1)}
            if attn is not None:
                rule['attn_type'] = attn
            try:
                arch = base.resolve(rule)
                base.check_attn(rule, arch)
            except ValueError:
                infeasible += 1
                continue
            if (arch, attn) in seen:
                continue
            seen.add((arch, attn))
            out.append(Candidate(rule=rule, arch=json_ready(arch.as_dict())))
    if not out:
        raise ValueError(f'none of the {infeasible} rules of the grid gives a feasible '
                         'architecture')
    return out, infeasible


# ---------------------------------------------------------------------------- cost
def attach_costs(cands: List[Candidate], base: BaseSpec, predictor=None,
                 progress: Progress = None) -> None:
    """Fill ``flops`` (always) and ``latency_ms`` (with a predictor) of every candidate."""
    from ..cost import get_complexity
    family = get_family(base.family)
    for i, c in enumerate(cands):
        flops = None if base.backbone_kwargs else family.analytic_flops(
            base.resolve(c.rule), in_channels=base.in_channels, attn_type=c.attn_type,
            linear_kernel_size=base.linear_kernel_size)
        if flops is None:  # no closed form (family, or backbone kwargs): count the model
            model = base.build(c.rule)
            flops = get_complexity(model, (base.in_channels, *c.arch['img_size']))['flops']
        c.flops = int(flops)
        if predictor is not None:
            c.latency_ms = predictor.predict(c.arch, in_channels=base.in_channels)
        if progress is not None:
            progress(i + 1, len(cands))


def _fmt_cost(value: float, kind: str) -> str:
    return f'{value / 1e9:.4g} GFLOPs' if kind == 'flops' else f'{value:.4g} ms'


def check_budget(budget: float) -> float:
    """``budget`` unless it is not a finite number > 0 (``ValueError`` naming ``budget``):
    every cost meets an infinite budget and none meets ``nan``."""
    problem = positive_number_error(budget)
    if problem:
        raise ValueError(f'budget {problem}')
    return budget


def filter_budget(cands: Sequence[Candidate], budget: float, kind: str = 'flops'
                  ) -> List[Candidate]:
    """Candidates with cost ``<= budget`` (``flops`` in MACs, ``latency`` in ms).

    Raises:
        BudgetError: none meets it; the message names the budget and the cheapest candidate.
    """
    if kind not in COSTS:
        raise ValueError(f'cost must be one of {COSTS}, got {kind!r}')
    check_budget(budget)
    if not cands:
        raise ValueError('no candidates to filter')
    feasible = [c for c in cands if c.cost(kind) <= budget]
    if not feasible:
        cheapest = min(cands, key=lambda c: c.cost(kind))
        raise BudgetError(f'no candidate meets the {kind} budget of {_fmt_cost(budget, kind)}: '
                          f'the cheapest candidate (scaling={cheapest.rule}) costs '
                          f'{_fmt_cost(cheapest.cost(kind), kind)}')
    return feasible


# ---------------------------------------------------------------------------- score


def proxy_metrics(base: BaseSpec, rule: Mapping[str, float], batch_size: int = 8,
                  num_inits: int = 1, num_points: int = 6, seed: int = 0) -> Dict[str, float]:
    """Both As-ViT proxies of one candidate, on a backbone without a final LayerNorm."""
    from .proxies import score_proxies
    kwargs = dict(get_family(base.family).proxy_kwargs)
    arch = base.resolve(rule)
    return score_proxies(lambda: base.build(rule, **kwargs),
                         (base.in_channels, *arch.img_size), batch_size=batch_size,
                         num_points=num_points, num_inits=num_inits, seed=seed)


def score_candidates(cands: List[Candidate], base: BaseSpec, scorer: str = 'proxies',
                     progress: Progress = None, **proxy_kwargs) -> None:
    """Fill ``score`` (higher is better) and ``metrics`` of every candidate, in place."""
    if scorer not in SCORERS:
        raise ValueError(f'scorer must be one of {SCORERS}, got {scorer!r}')
    if scorer == 'flops':
        for i, c in enumerate(cands):
            c.score = float(c.flops)
            if progress is not None:
                progress(i + 1, len(cands))
        return
    for i, c in enumerate(cands):
        c.metrics = proxy_metrics(base, c.rule, **proxy_kwargs)
        if progress is not None:
            progress(i + 1, len(cands))
    r_ntk = ranks([c.metrics['ntk_condition'] for c in cands], higher_is_better=False)
    r_ld = ranks([c.metrics['length_distortion'] for c in cands], higher_is_better=True)
    span = 2 * max(len(cands) - 1, 1)
    for c, a, b in zip(cands, r_ntk, r_ld):
        c.metrics.update(rank_ntk=a, rank_length=b)
        c.score = 1.0 - (a + b) / span


# ---------------------------------------------------------------------------- rank / pareto
def rank_candidates(cands: Sequence[Candidate], kind: str = 'flops') -> List[Candidate]:
    """Best first: higher score, then lower cost, then fewer rule keys (stable)."""
    return sorted(cands, key=lambda c: (-c.score, c.cost(kind), len(c.rule)))


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the (cost, score) points no other point dominates, by increasing cost.

    ``a`` dominates ``b`` when ``a.cost <= b.cost`` and ``a.score >= b.score`` with one of them
    strict; duplicates of a front point are all kept.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best, best_cost = [], -math.inf, None
    for i in order:
        cost, score = points[i]
        if score > best:
            front.append(i)
            best, best_cost = score, cost
        elif score == best and cost == best_cost:
            front.append(i)  # an exact duplicate of the last front point
    return front


# ---------------------------------------------------------------------------- rule file
def rule_file_text(rule: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """``# header`` lines then ``scaling = dict(k=v, ...)``, loadable by mmengine's Config."""
    items = ', '.join(f'{k}={v!r}' for k, v in rule.items())
    lines = [f'# {h}'.rstrip() for h in header]
    return '\n'.join(lines + [f'scaling = dict({items})']) + '\n'


def check_rule_path(path: str, flag: str = 'rule file') -> str:
    """``path`` if a rule file can be written there, else a ``ValueError`` naming ``field``.

    Refused: an existing folder (or a path ending in a separator), a name that is not ``.py``
    (mmengine loads rule files as Python configs), a parent that is a file or not writable.
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f'{flag}: expected a file path, got {path!r}')
    if osp.isdir(path) or path.endswith(('/', os.sep)):
        raise ValueError(f'{flag}: {path} is a folder; give a file such as '
                         f'{osp.join(path, "searched.py")}')
    if not path.endswith('.py'):
        raise ValueError(f'{flag}: {path} must end in .py (rule files are Python configs)')
    problem = creatable_error(path)  # under a file, not writable, on /proc ...
    if problem:
        raise ValueError(f'{flag}: {problem}')
    return path


def write_rule_file(path: str, rule: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """Write :func:`rule_file_text` atomically at ``path``; returns ``path``."""
    from ..scaling import PIT_RULE_KEYS
    check_rule_path(path)
    unknown = sorted(set(rule) - PIT_RULE_KEYS - {'attn_type'})
    if unknown:
        raise ValueError(f'not a scaling rule: unknown key {unknown[0]!r}')
    if 'attn_type' in rule:  # a str, or one per stage for PiT
        from ..models.linear_attention import check_attn_type
        attn = rule['attn_type']
        for i, a in enumerate([attn] if isinstance(attn, str) else list(attn)):
            check_attn_type(a, 'scaling.attn_type' + ('' if isinstance(attn, str) else f'[{i}]'))
    atomic_write(path, rule_file_text(rule, header))
    return path


# ---------------------------------------------------------------------------- all of it
@dataclass
class SearchResult:
    ranked: List[Candidate]
    front: List[Candidate]
    num_enumerated: int
    num_infeasible_rules: int
    cost: str
    budget: float
    scorer: str

    @property
    def winner(self) -> Candidate:
        return self.ranked[0]


def run_search(base: BaseSpec, budget: float, cost: str = 'flops', scorer: str = 'proxies',
               grids: Optional[Mapping[str, Sequence[float]]] = None, predictor=None,
               max_candidates: Optional[int] = None,
               progress: Optional[Callable[[str, int, int], None]] = None,
               attn_types: Optional[Sequence[str]] = None,
               **proxy_kwargs) -> SearchResult:
    """Enumerate, cost, filter by ``budget`` (MACs or ms), score and rank.

    ``attn_types`` makes the attention type a searched dimension (see the module docstring);
    the latency predictor models softmax attention only, so it cannot cost linear-angular
    candidates (``ValueError``).

    ``max_candidates`` keeps the most expensive feasible candidates (closest to the budget),
    when the budget leaves more than that to score. ``progress(stage, done, total)`` is called
    as work proceeds (stages ``'cost'`` and ``'score'``).
    """
    if cost not in COSTS:
        raise ValueError(f'cost must be one of {COSTS}, got {cost!r}')
    if scorer not in SCORERS:
        raise ValueError(f'scorer must be one of {SCORERS}, got {scorer!r}')
    check_budget(budget)  # before enumerating and costing
    if cost == 'latency' and predictor is None:
        raise ValueError('a latency budget needs a latency predictor (--predictor FILE)')
    if max_candidates is not None and max_candidates < 1:
        raise ValueError(f'max_candidates must be >= 1, got {max_candidates}')
    attn_types = check_attn_types(attn_types)
    if cost == 'latency' and attn_types and set(attn_types) - {'softmax'}:
        raise ValueError('a latency budget cannot cost linear-angular candidates: the latency '
                         'predictor models softmax attention only (use --cost flops)')
    cands, infeasible = enumerate_candidates(base, grids, attn_types)

    def stage(name):
        return None if progress is None else (lambda d, t: progress(name, d, t))

    attach_costs(cands, base, predictor if cost == 'latency' else None, stage('cost'))
    feasible = filter_budget(cands, budget, cost)
    if max_candidates is not None and len(feasible) > max_candidates:
        feasible = sorted(feasible, key=lambda c: -c.cost(cost))[:max_candidates]
    score_candidates(feasible, base, scorer, stage('score'), **proxy_kwargs)
    ranked = rank_candidates(feasible, cost)
    idx = pareto_front([(c.cost(cost), c.score) for c in ranked])
    return SearchResult(ranked=ranked, front=[ranked[i] for i in idx],
                        num_enumerated=len(cands), num_infeasible_rules=infeasible, cost=cost,
                        budget=budget, scorer=scorer)


# ---------------------------------------------------------------------------- measured check
def predictor_setting(predictor) -> Dict[str, Any]:
    """``dict(backend, threads, clock)`` the predictor was fitted for (its
    ``meta['fingerprint']``; a calibrated predictor's own meta first, then its base's),
    default eager / 1 thread / wall clock."""
    for meta in (getattr(predictor, 'meta', None), getattr(getattr(predictor, 'base', None),
                                                           'meta', None)):
        fp = (meta or {}).get('fingerprint') or {}
        if fp.get('backend'):
            return dict(backend=fp['backend'], threads=int(fp.get('threads') or 1),
                        clock=fp.get('clock') or 'wall')
    return dict(backend='eager', threads=1, clock='wall')


def measure_candidates(cands: Sequence[Candidate], base: BaseSpec, budget_ms: float,
                       backend: str = 'eager', threads: int = 1, rounds: int = 3,
                       repeats: int = 5, warmup_s: float = 0.3, clock: str = 'wall',
                       progress: Optional[Callable[[int, int], None]] = None
                       ) -> List[Dict[str, Any]]:
    """Measure ``cands`` (e.g. the top of a latency-budget ranking) and compare with their
    predicted latency.

    Protocol of :func:`~mmvitscale.cost.backends.measure_interleaved` (threads and affinity
    pinned, candidates interleaved round robin). Per candidate: ``predicted_ms``,
    ``measured_ms`` (median), ``p10_ms`` / ``p90_ms``, ``noise_pct``, ``error_pct``
    (predicted vs measured) and ``meets_budget`` (measured median <= ``budget_ms``).
    ``clock`` as the predictor's measurements (``thread``: CPU time, one thread).
    """
    from ..cost.backends import make_runner, measure_interleaved, pinned
    if not cands:
        raise ValueError('measure_candidates: no candidates')
    with pinned(threads) as pin:
        runners = []
        for c in cands:
            run, sync, _ = make_runner(base.build(c.rule), (base.in_channels,
                                                            *c.arch['img_size']), backend)
            runners.append((run, sync))
        results = measure_interleaved(runners, rounds, repeats, warmup_s, clock=clock,
                                      progress=progress)
    out = []
    for c, r in zip(cands, results):
        pred = c.latency_ms
        out.append(dict(rule=c.rule, arch=c.arch, score=c.score, predicted_ms=pred,
                        measured_ms=r['median_ms'], p10_ms=r['p10_ms'], p90_ms=r['p90_ms'],
                        noise_pct=r['noise_pct'], repeats=r['repeats'],
                        error_pct=(None if pred is None else
                                   100.0 * (pred - r['median_ms']) / r['median_ms']),
                        meets_budget=bool(r['median_ms'] <= budget_ms), backend=backend,
                        threads=threads, clock=clock, cpus=pin['cpus']))
    return out


# ---------------------------------------------------------------------------- reports
def cost_text(c: Candidate, kind: str) -> str:
    """A candidate's cost as the tables print it: GFLOPs to 4 places, or ms to 3."""
    return f'{c.flops / 1e9:.4f}' if kind == 'flops' else f'{c.latency_ms:.3f}'


def arch_text(arch: Mapping[str, Any]) -> str:
    """One line for a candidate's architecture (its family's ``arch_text``)."""
    fam = family_of_dict(arch)
    if fam is None:
        raise ValueError(f'arch_text: {dict(arch)} is no family\'s spec')
    return fam.arch_text(arch)


def candidates_markdown(result: SearchResult, header: str) -> str:
    """Every feasible candidate ranked, with its cost, score, proxies and Pareto mark."""
    front = {id(c) for c in result.front}
    unit = UNITS[result.cost]
    lines = [f'# {header}', '', f'| rank | scaling | architecture | {result.cost} ({unit}) | '
             'GFLOPs | score | NTK cond. | length dist. | Pareto |',
             '|---:|---|---|---:|---:|---:|---:|---:|:---:|']
    for i, c in enumerate(result.ranked, 1):
        m = c.metrics
        ntk = f'{m["ntk_condition"]:.4g}' if 'ntk_condition' in m else ''
        ld = f'{m["length_distortion"]:.4g}' if 'length_distortion' in m else ''
        lines.append(f'| {i} | `{c.rule}` | {arch_text(c.arch)} | {cost_text(c, result.cost)}'
                     f' | {c.flops / 1e9:.4f} | {c.score:.4g} | {ntk} | {ld} | '
                     f'{"*" if id(c) in front else ""} |')
    return '\n'.join(lines) + '\n'


def measured_markdown(measured: Sequence[Mapping[str, Any]], budget_ms: float) -> str:
    """Predicted vs measured table of the --measure-winners check ('' without one)."""
    if not measured:
        return ''
    m0 = measured[0]
    clock = '' if m0.get('clock', 'wall') == 'wall' else f", {m0['clock']} clock"
    lines = ['', f"## Predicted vs measured ({m0['backend']}, {m0['threads']} thread(s)"
             f'{clock}, budget {budget_ms:g} ms)', '',
             '| rank | architecture | predicted ms | measured ms (p10-p90) | error % | '
             'noise % | meets budget |', '|---:|---|---:|---|---:|---:|:---:|']
    for i, m in enumerate(measured, 1):
        lines.append(f"| {i} | {arch_text(m['arch'])} | {m['predicted_ms']:.2f} | "
                     f"{m['measured_ms']:.2f} ({m['p10_ms']:.2f}-{m['p90_ms']:.2f}) | "
                     f"{m['error_pct']:+.1f} | {m['noise_pct']:.1f} | "
                     f"{'yes' if m['meets_budget'] else 'no'} |")
    return '\n'.join(lines) + '\n'


def plot_pareto(path: str, result: SearchResult) -> None:
    """``pareto.png``: score vs cost of the feasible candidates, the front and the winner."""
    plt = pyplot()
    scale = 1e-9 if result.cost == 'flops' else 1.0
    xs = [c.cost(result.cost) * scale for c in result.ranked]
    ys = [c.score for c in result.ranked]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(xs, ys, s=10, alpha=0.4, label='feasible candidates')
    fx = [c.cost(result.cost) * scale for c in result.front]
    ax.plot(fx, [c.score for c in result.front], 'r.-', label='Pareto front')
    w = result.winner
    ax.scatter([w.cost(result.cost) * scale], [w.score], marker='*', s=150, c='gold',
               edgecolors='k', zorder=3, label='winner')
    ax.axvline(result.budget * scale, color='k', ls='--', lw=0.8, label='budget')
    ax.set(xscale='log', xlabel=f'{result.cost} ({UNITS[result.cost]}, log)',
           ylabel=f'score ({result.scorer})',
           title=f'{len(result.ranked)} feasible of {result.num_enumerated} candidates')
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
