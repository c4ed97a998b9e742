"""Measure mode of the device-transfer report: scaled ViTs timed on several CPU backends.

:func:`plan_archs` lists the architectures (scaling-rule files, then seeded random rules,
applied to one ViT preset), :func:`check_measure_spec` checks every input before anything is
built, and :func:`measure_archs` times them round robin per backend and appends one latency-table
row per (arch, backend), labelled by rule, that :func:`~.device_ranking.read_matrix` reads
back for the report. Kept apart from :mod:`.device_ranking` (the report: tables in, tau and
winners out; it builds no model) because this side builds models and needs the backends.
"""
import glob
import os.path as osp
import time
from dataclasses import dataclass
from typing import (Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence,
                    Tuple, Union)

from ..errors import InputError
from ..search.rule_sampling import sample_random_rules

RANDOM_GRID: Dict[str, Tuple[float, ...]] = dict(
    depth_mult=(0.5, 0.75, 1.0, 1.25), width_mult=(0.75, 1.0, 1.25),
    mlp_ratio_mult=(0.5, 1.0), resolution_mult=(0.75, 1.0, 1.25), patch_size_mult=(1.0, 2.0))
SHORT = dict(depth_mult='d', width_mult='w', heads_mult='h', mlp_ratio_mult='m',
             resolution_mult='r', patch_size_mult='p')
MIN_ARCHS = 3  # archs every setting needs for a tau (and check_matrix's default)

Rule = Dict[str, float]


def default_rule_files() -> Tuple[str, ...]:
    """Every ``configs/_base_/scaling/*.py`` of the repository, sorted."""
    from .tasks import SCALING_DIR
    return tuple(sorted(glob.glob(osp.join(SCALING_DIR, '*.py'))))


@dataclass(frozen=True)
class MeasureSpec:
    """What measure mode times: rules applied to one ViT preset, on which backends, how.

    Attributes:
        rules: scaling-rule files; None (the default) means :func:`default_rule_files`.
        num_random: extra seeded random rules (:func:`sample_rules` over :data:`RANDOM_GRID`).
        seed: seed of the random rules.
        arch: the ViT preset name (or arch dict) the rules scale.
        img_size: base resolution (rules may scale it).
        patch_size: base patch size (rules may scale it).
        backends: :data:`mmvitscale.cost.backends.BACKENDS` names, run on the CPU.
        compile_max_archs: ``compile*`` backends measure only the first this many archs.
        threads: torch / onnxruntime threads.
        rounds: round-robin passes over the archs (the noise floor is their spread).
        repeats: timed runs per arch and round.
        warmup: warm-up seconds per arch.
    """

    rules: Optional[Sequence[str]] = None
    num_random: int = 6
    seed: int = 0
    arch: Union[str, Mapping[str, Any]] = 'deit-tiny'
    img_size: int = 224
    patch_size: int = 16
    backends: Sequence[str] = ('eager', 'onnxruntime')
    compile_max_archs: int = 5
    threads: int = 1
    rounds: int = 3
    repeats: int = 5
    warmup: float = 0.3

    def __post_init__(self) -> None:
        rules = default_rule_files() if self.rules is None else tuple(self.rules)
        object.__setattr__(self, 'rules', rules)
        object.__setattr__(self, 'backends', tuple(self.backends))


def check_measure_spec(spec: MeasureSpec, tables: Sequence[str] = (),
                       fingerprints: Optional[Sequence[str]] = None) -> None:
    """Check every measure-mode input before anything is built or timed.

    Args:
        spec: what to measure.
        tables: existing latency tables the report will read besides the new rows; their
            fingerprints count towards the 2 settings a report needs.
        fingerprints: the settings the report is restricted to (None: all); given, the
            2-settings check is left to the report.

    Raises:
        InputError: naming the first bad field of ``spec`` (``rules``, ``threads``, ``rounds``,
            ``repeats``, ``img_size``, ``patch_size``, ``num_random``, ``warmup``,
            ``backends``, ``compile_max_archs``) and its value.
    """
    from ..cost.backends import BACKENDS, check_backend
    from ..cost.latency_table import fingerprint, fingerprint_id, read_rows
    from ..rules import check_rule_file
    for path in spec.rules:
        try:
            check_rule_file(path)
        except ValueError as err:
            raise InputError('rules', str(err)) from None
    for name in ('threads', 'rounds', 'repeats', 'img_size', 'patch_size'):
        value = getattr(spec, name)
        if value < 1:
            raise InputError(name, f'must be >= 1, got {value}')
    for name in ('num_random', 'warmup'):
        value = getattr(spec, name)
        if value < 0:
            raise InputError(name, f'must be >= 0, got {value:g}')
    if len(spec.rules) + spec.num_random < MIN_ARCHS:
        raise InputError(('rules', 'num_random'),
                         f'{len(spec.rules)} rule file(s) + {spec.num_random} random rule(s) '
                         f'give fewer than {MIN_ARCHS} architectures')
    for backend in spec.backends:
        if backend not in BACKENDS:
            raise InputError('backends', f'unknown backend {backend!r} '
                             f'(choose from {", ".join(BACKENDS)})')
        try:
            check_backend(backend, 'cpu')
        except ValueError as err:
            raise InputError('backends', str(err), item=backend) from None
    if 'compile' in spec.backends and spec.compile_max_archs < MIN_ARCHS:
        raise InputError('compile_max_archs', f'must be >= {MIN_ARCHS} (archs shared by all '
                         f'settings), got {spec.compile_max_archs}')
    fids = {fingerprint_id(fingerprint('cpu', b, spec.threads)) for b in spec.backends}
    fids |= {r.get('fingerprint_id') for t in tables for r in read_rows(t)} - {None}
    if len(fids) < 2 and fingerprints is None:
        raise InputError('backends', f'need latency rows of at least 2 (device, backend) '
                         f'fingerprints; {" ".join(spec.backends)} plus the TABLEs give '
                         f'{len(fids)}')


def sample_rules(resolve: Callable[[Rule], Hashable], n: int, seed: int = 0,
                 exclude: Iterable[Hashable] = (),
                 grid: Mapping[str, Sequence[float]] = RANDOM_GRID) -> List[Rule]:
    """``n`` seeded random rules whose resolved archs are feasible, distinct and not excluded
    (:func:`mmvitscale.search.rule_sampling.sample_random_rules`: knobs drawn with
    replacement, multipliers of 1 left out; fewer than ``n`` after ``200 n`` draws raise
    ``ValueError``).

    ``resolve(rule)`` returns a hashable arch or raises ``ValueError`` (infeasible).
    """
    return sample_random_rules(resolve, n, grid, seed, exclude)


def rule_label(name: str, rule: Mapping[str, float]) -> str:
    """``name`` with the rule's knobs, e.g. ``rand0(d0.75,w1.25)``; ``name(base)`` if empty."""
    return f"{name}({','.join(f'{SHORT.get(k, k)}{v:g}' for k, v in rule.items()) or 'base'})"


def resolve_arch(spec: MeasureSpec, rule: Rule):
    """The :class:`~mmvitscale.scaling.ViTArch` of ``spec``'s preset scaled by ``rule``."""
    from ..models import ScaledViT
    return ScaledViT.resolve_arch(spec.arch, spec.img_size, spec.patch_size, rule)


def plan_archs(spec: MeasureSpec) -> List[Tuple[str, Rule]]:
    """(label, rule) of every architecture to measure, each a distinct resolved arch.

    First the rule files in order (label: the file stem; a file giving an arch already listed
    is skipped), then ``spec.num_random`` random rules seeded by ``spec.seed`` (label:
    :func:`rule_label` of ``rand<i>``). The same spec gives the same list.
    """
    from mmengine.config import Config

    from ..rules import image_rule

    def resolve(rule: Rule) -> Hashable:
        return resolve_arch(spec, rule)

    out: List[Tuple[str, Rule]] = []
    seen = set()
    for path in spec.rules:
        rule = image_rule(Config.fromfile(path).scaling)
        arch = resolve(rule)
        if arch in seen:
            continue
        seen.add(arch)
        out.append((osp.splitext(osp.basename(path))[0], rule))
    randoms = sample_rules(resolve, spec.num_random, spec.seed, exclude=seen)
    out += [(rule_label(f'rand{i}', r), r) for i, r in enumerate(randoms)]
    return out


def measure_archs(spec: MeasureSpec, table: str,
                  archs: Optional[Sequence[Tuple[str, Rule]]] = None,
                  on_result: Optional[Callable[[str, str, Dict[str, Any]], None]] = None,
                  on_failure: Optional[Callable[[str, str, Exception], None]] = None
                  ) -> Dict[str, Any]:
    """Measure every arch on every backend of ``spec`` at batch 1; append the rows to ``table``.

    Protocol (:func:`mmvitscale.cost.protocol.measure_rows`): threads and CPU affinity
    pinned, per backend all archs prepared, then visited round robin ``spec.rounds`` times with
    ``spec.repeats`` timed runs per visit; each row carries its ``noise_pct`` (spread of the
    per-round medians), the report's noise floor, its ``cpu_share`` and the load average.
    ``compile*`` backends take only the first ``spec.compile_max_archs`` archs. Inputs are
    assumed checked (:func:`check_measure_spec`).

    Args:
        spec: what to measure.
        table: latency table (JSON lines) the rows are appended to, one backend at a time.
        archs: (label, rule) pairs; default :func:`plan_archs` of ``spec``.
        on_result: called with (label, backend, latency-table row) for each measured arch.
        on_failure: called with (label, backend, error) for an arch a backend cannot prepare;
            the arch is then left out on that backend.

    Returns:
        ``dict(archs=[labels], failures=['<label> <backend>: <error>'], setup_s={backend:
        [seconds per arch]}, measure_wall_s=...)``.
    """
    from ..cost.latency_table import append_rows
    from ..cost.protocol import measure_rows
    archs = plan_archs(spec) if archs is None else list(archs)
    info: Dict[str, Any] = dict(archs=[a[0] for a in archs], failures=[], setup_s={})
    t0 = time.perf_counter()
    for backend in spec.backends:
        use = archs[:spec.compile_max_archs] if backend.startswith('compile') else archs
        items = []
        for label, rule in use:
            cfg = dict(type='mmvitscale.ScaledViT', arch=spec.arch, img_size=spec.img_size,
                       patch_size=spec.patch_size, scaling=rule)
            arch = resolve_arch(spec, rule).as_dict()
            items.append(dict(cfg=cfg, family='vit', arch=arch,
                              input_shape=(3, *arch['img_size']),
                              fields=dict(label=label, rule=rule, source='device_transfer')))
        rows, run = measure_rows(items, backend, spec.threads, spec.rounds, spec.repeats,
                                 spec.warmup)
        for i, err in run['failures']:
            label = use[i][0]
            info['failures'].append(f'{label} {backend}: {err}')
            if on_failure is not None:
                on_failure(label, backend, err)
        if run['setup_s']:
            info['setup_s'][backend] = run['setup_s']
        if not rows:
            continue
        if on_result is not None:
            for row in rows:
                on_result(row['label'], backend, row)
        append_rows(table, rows)
    info['measure_wall_s'] = time.perf_counter() - t0
    return info
