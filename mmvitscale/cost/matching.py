"""Equal cost on every task: apply a rule as a strategy, then re-match a target cost.

A scaling rule holds multipliers (depth x1.5, patch x2, ...). Applied to another task or
family it gives another cost, so a transfer claim compares arms at the *target task's*
baseline cost: the rule's other knobs are kept and one named knob is solved so that the cost
lands within a tolerance of the target (``docs/studies.md``, norm 9).

The knob solved here is the **width**: the rule's ``width`` / ``width_mult`` is replaced by an
absolute ``width`` (ViT and video ViT: embedding dims, any multiple of the head count; PiT:
the per-head dims of every stage), the finest width the families accept (a multiplier rounds
to ``lcm(heads, 8)``, 12% steps at 64 dims). Cost is monotone in the width, so the solver
brackets the target by doubling and bisects over integers, skipping widths the family
refuses; it returns the legal width whose cost ratio is nearest 1 and says whether that is
within the tolerance (:class:`Match`).

The cost of a candidate comes from the family (:func:`backbone_flops`: its closed form when
it has one, else the built backbone counted by :func:`~mmvitscale.cost.get_complexity`), or
from any callable (e.g. a measured eager latency).
"""
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

KNOB = 'width'
WIDTH_KEYS = ('width', 'width_mult')


class MatchError(ValueError):
    """No value of the knob brings a rule within the tolerance of the target cost."""


@dataclass
class Match:
    """The outcome of matching one rule's cost on one task.

    ``value``: the solved width (``None`` when nothing could be solved); ``cost`` and
    ``ratio`` (= cost / target) at that value; ``rule_cost`` / ``rule_ratio``: the rule file
    as written; ``scaling``: the rule with the solved knob (what the arm trains);
    ``matched``: ``abs(ratio - 1) <= tolerance``; ``reason`` says why not, naming the rule and
    the task.
    """

    rule: str
    task: str
    knob: str
    metric: str
    target: float
    tolerance: float
    value: Optional[int]
    cost: Optional[float]
    ratio: Optional[float]
    rule_cost: Optional[float]
    rule_ratio: Optional[float]
    matched: bool
    reason: str = ''
    scaling: Dict[str, Any] = field(default_factory=dict)
    evaluations: int = 0

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def family_of_backbone(backbone: Mapping[str, Any]) -> Any:
    """The registered family whose ``backbone_type`` builds ``backbone`` (a registry dict)."""
    from ..families import family_names, get_family
    kind = str(backbone.get('type', '')).split('.', 1)[-1]
    for name in family_names():
        fam = get_family(name)
        if fam.backbone_type.split('.', 1)[-1] == kind:
            return fam
    raise ValueError(f'backbone type {backbone.get("type")!r} belongs to no registered family')


def backbone_flops(backbone: Mapping[str, Any], input_shape: Sequence[int]) -> float:
    """Backbone MACs of one sample of ``input_shape`` (C, [T,] H, W) for a registry dict.

    Asks the family for its closed form when the input is the resolved arch's own size (no
    padding, e.g. a classification task); otherwise builds the backbone and counts it, as a
    trial counts its cost. A rule the family refuses raises its ``ValueError``.
    """
    from .backends import build_model
    from .counter import get_complexity
    fam = family_of_backbone(backbone)
    geometry = {k: backbone[k] for k in ('num_frames', 'tubelet_size') if k in backbone}
    spec = fam.resolve(backbone['arch'], backbone.get('img_size', 224),
                       backbone.get('patch_size'), dict(backbone.get('scaling') or {}),
                       **geometry)
    own = tuple(fam.input_size(spec)) == tuple(input_shape[-2:]) and len(input_shape) == 3
    channels = int(input_shape[0])
    if own and backbone.get('with_cls_token', True) is not False:
        flops = fam.analytic_flops(spec, in_channels=channels)
        if flops is not None:
            return float(flops)
    model = build_model(dict(backbone))
    return float(get_complexity(model, tuple(input_shape))['flops'])


def with_width(rule: Mapping[str, Any], width: int) -> Dict[str, Any]:
    """``rule`` with its width knob replaced by the absolute ``width``."""
    out = {k: v for k, v in dict(rule).items() if k not in WIDTH_KEYS}
    out[KNOB] = int(width)
    return out


def solve_width(cost: Callable[[Dict[str, Any]], float], rule: Mapping[str, Any],
                target: float, tolerance: float, rule_name: str, task: str,
                metric: str = 'flops', max_width: int = 4096, strict: bool = False) -> Match:
    """Solve the width of ``rule`` so that ``cost(rule')`` is within ``tolerance`` of
    ``target``.

    Args:
        cost: the cost of a rule dict on the task; raises ``ValueError`` for a width the
            family refuses (e.g. not a multiple of the head count).
        rule: the rule as written (its other knobs are kept).
        target: the task baseline's cost; ``tolerance``: allowed ``abs(ratio - 1)``.
        rule_name, task: named in every reason and error.
        strict: raise :class:`MatchError` instead of returning ``matched=False``.
    """
    if not target > 0:
        raise ValueError(f'target cost must be > 0, got {target!r}')
    if not 0 <= tolerance < 1:
        raise ValueError(f'tolerance must be in [0, 1), got {tolerance!r}')
    cache: Dict[int, Optional[float]] = {}

    def at(width: int) -> Optional[float]:
        if width not in cache:
            try:
                cache[width] = float(cost(with_width(rule, width)))
            except ValueError:
                cache[width] = None
        return cache[width]

    try:
        rule_cost: Optional[float] = float(cost(dict(rule)))
    except ValueError:
        rule_cost = None
    what = f'rule {rule_name} on task {task}'

    def result(width: Optional[int], matched: bool, reason: str = '') -> Match:
        c = cache.get(width) if width is not None else None
        m = Match(rule=rule_name, task=task, knob=KNOB, metric=metric, target=target,
                  tolerance=tolerance, value=width, cost=c,
                  ratio=None if c is None else c / target, rule_cost=rule_cost,
                  rule_ratio=None if rule_cost is None else rule_cost / target,
                  matched=matched, reason=reason,
                  scaling=with_width(rule, width) if width is not None else dict(rule),
                  evaluations=len(cache))
        if strict and not matched:
            raise MatchError(reason)
        return m

    def legal_from(width: int, stop: int, step: int) -> Optional[int]:
        w = width
        while (w <= stop if step > 0 else w >= stop):
            if at(w) is not None:
                return w
            w += step
        return None

    lo = legal_from(1, 64, 1)
    if lo is None:
        return result(None, False, f'{what}: no width from 1 to 64 gives a valid '
                      f'architecture, so the {metric} cannot be matched')
    if at(lo) > target * (1 + tolerance):
        return result(lo, False, f'{what}: even the narrowest width ({lo}) costs '
                      f'x{at(lo) / target:.2f} the baseline {metric} (tolerance '
                      f'{tolerance:.0%}): the rule\'s other knobs alone exceed the target')
    if at(lo) >= target:
        return result(lo, True)
    hi = lo
    while True:  # double until the cost reaches the target
        nxt = legal_from(hi * 2, min(hi * 4, max_width), 1)
        if nxt is None:
            return result(hi, False, f'{what}: the widest width tried ({hi}) costs only '
                          f'x{at(hi) / target:.2f} the baseline {metric} (tolerance '
                          f'{tolerance:.0%})')
        lo, hi = hi, nxt
        if at(hi) >= target:
            break
    while True:  # at(lo) < target <= at(hi), both legal
        mid = legal_from((lo + hi) // 2, hi - 1, 1) if hi - lo > 1 else None
        if mid is None or mid == lo:
            mid = legal_from((lo + hi) // 2, lo + 1, -1) if hi - lo > 1 else None
        if mid is None or mid in (lo, hi):
            break
        if at(mid) >= target:
            hi = mid
        else:
            lo = mid
    best = min((lo, hi), key=lambda w: abs(at(w) / target - 1))
    ratio = at(best) / target
    if abs(ratio - 1) <= tolerance:
        return result(best, True)
    return result(best, False, f'{what}: the nearest widths {lo} and {hi} cost '
                  f'x{at(lo) / target:.3f} and x{at(hi) / target:.3f} the baseline {metric}, '
                  f'outside the tolerance ({tolerance:.0%})')
