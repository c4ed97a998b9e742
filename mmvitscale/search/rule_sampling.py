"""Seeded sampling of scaling rules whose resolved architectures are distinct.

One filter, :func:`distinct_rules` (feasible, not seen before, not excluded), over two seeded
candidate orders:

* :func:`sample_grid_rules`: a permutation of the whole grid product, drawn *without*
  replacement (optionally one rule first); every grid key stays in the rule; a space with fewer
  distinct architectures gives fewer rules. Used by the proxy-correlation study
  (:mod:`mmvitscale.experiments.proxy_correlation`).
* :func:`sample_random_rules`: independent draws of every knob *with* replacement, multipliers
  of 1 left out of the rule; fewer than ``n`` architectures after ``200 n`` draws raise. Used by
  the device-transfer measure mode (:mod:`mmvitscale.experiments.device_measure`).

The two orders are kept apart on purpose: for one seed they give different rules, and each is
the identity of results already recorded (resume-log keys, latency-table labels).
"""
import itertools
import random
from typing import (Any, Callable, Dict, Hashable, Iterable, Iterator, List, Mapping, Optional,
                    Sequence)

Rule = Dict[str, Any]
Resolve = Callable[[Rule], Hashable]


def distinct_rules(candidates: Iterable[Rule], resolve: Resolve, n: Optional[int] = None,
                   exclude: Iterable[Hashable] = ()) -> List[Rule]:
    """The first ``n`` (None: all) ``candidates`` whose architectures are feasible and distinct.

    Args:
        candidates: rules in the order to try them (consumed lazily, only as far as needed).
        resolve: a rule's hashable architecture; raises ``ValueError`` when it is infeasible
            (that candidate is skipped).
        n: how many to return at most.
        exclude: architectures counted as already taken.

    Returns:
        The rules kept, in candidate order; fewer than ``n`` when the candidates run out.
    """
    seen, out = set(exclude), []
    if n is not None and n <= 0:
        return out
    for rule in candidates:
        try:
            arch = resolve(rule)
        except ValueError:  # not buildable (e.g. width rounds to 0)
            continue
        if arch in seen:
            continue
        seen.add(arch)
        out.append(rule)
        if n is not None and len(out) == n:
            break
    return out


def grid_permutation(grid: Mapping[str, Sequence[Any]], seed: int = 0,
                     first: Optional[Mapping[str, Any]] = None) -> List[Rule]:
    """Every rule of the grid product (all keys set) in a seeded random order; ``first`` (if
    given) moved, or added, to the front."""
    keys = list(grid)
    space = [dict(zip(keys, values)) for values in itertools.product(*grid.values())]
    random.Random(seed).shuffle(space)
    if first is not None:
        space = [dict(first)] + [r for r in space if r != first]
    return space


def random_draws(grid: Mapping[str, Sequence[Any]], seed: int = 0,
                 omit: Any = 1.0) -> Iterator[Rule]:
    """Endless seeded rules, each knob drawn independently from its grid; knobs equal to
    ``omit`` (the identity multiplier) are left out of the rule."""
    rng = random.Random(seed)
    while True:
        rule = {k: rng.choice(tuple(v)) for k, v in grid.items()}
        yield {k: v for k, v in rule.items() if v != omit}


def sample_grid_rules(resolve: Resolve, n: int, grid: Mapping[str, Sequence[Any]],
                      seed: int = 0, first: Optional[Mapping[str, Any]] = None,
                      exclude: Iterable[Hashable] = ()) -> List[Rule]:
    """``n`` rules of distinct architectures from a seeded permutation of ``grid`` (without
    replacement; ``first`` tried first); fewer when the grid holds fewer."""
    return distinct_rules(grid_permutation(grid, seed, first), resolve, n, exclude)


def sample_random_rules(resolve: Resolve, n: int, grid: Mapping[str, Sequence[Any]],
                        seed: int = 0, exclude: Iterable[Hashable] = (),
                        tries_per_rule: int = 200) -> List[Rule]:
    """``n`` rules of distinct architectures from seeded independent draws (:func:`random_draws`).

    Raises:
        ValueError: fewer than ``n`` found in ``tries_per_rule * max(n, 1)`` draws.
    """
    draws = itertools.islice(random_draws(grid, seed), tries_per_rule * max(n, 1))
    out = distinct_rules(draws, resolve, n, exclude)
    if len(out) < n:
        raise ValueError(f'could only sample {len(out)} of {n} distinct architectures')
    return out
