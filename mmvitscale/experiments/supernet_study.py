"""Does a weight-sharing supernet rank subnets like training them? The logic of
``tools/supernet_scorer.py`` (issue 5).

1. Train ONE widest / deepest ScaledViT supernet on offline Fashion-MNIST with the sandwich rule
   (:func:`train_shared_supernet`, :func:`mmvitscale.search.supernet.train_supernet`).
2. Score subnets (the largest, the smallest and random others,
   :func:`mmvitscale.search.supernet.pick_subnets`) with the shared weights on a validation
   subset of the Fashion-MNIST test split, no retraining (:func:`score_shared`).
3. Train each of those subnets from scratch with one equal short budget, once per scratch seed,
   and evaluate it on the same subset (:func:`train_from_scratch`); Kendall's tau-b between the
   shared-weight accuracies and the seed-mean scratch accuracies with its two-sided p-value
   (:func:`rank_agreement`, i.e. :func:`mmvitscale.experiments.stats.kendall_tau`), its 95%
   bootstrap interval over subnets and the tau per scratch seed
   (:func:`mmvitscale.experiments.stats.tau_over_seeds`), and how alike two scratch seeds rank
   the subnets (:func:`mmvitscale.experiments.stats.seed_agreement`: the ceiling any scorer can
   reach against one short training).

:func:`check_spec` refuses bad inputs before any work; :func:`build_report`, :func:`to_markdown`,
:func:`plot` and :func:`write_report` make the outputs; :func:`run_study` runs it all in order.
Printing and progress are the caller's (callbacks).
"""
import json
import math
import os
import os.path as osp
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..fileio import atomic_path, atomic_write, pyplot, save_figure
from ..errors import InputError, seed_list_error
from ..search.supernet import (SlicedViT, SubnetArch, ViTClassifier, evaluate, pick_subnets,
                               prepare_images, resize, score_subnets, search_space, train_model,
                               train_supernet)
from . import stats
from .stats import fmt_tau
from .console import Eta, loadavg_text

__all__ = [
    'REPORT_STEM', 'PLOT_NAME', 'CHECKPOINT_NAME', 'SupernetStudySpec', 'StudyData',
    'check_spec', 'build_space', 'load_study_data', 'train_shared_supernet', 'save_supernet',
    'score_shared', 'train_from_scratch', 'rank_agreement', 'build_report', 'to_markdown',
    'plot', 'write_report', 'spec_from_flags', 'run_study'
]

REPORT_STEM = 'supernet_scores'
PLOT_NAME = 'supernet_vs_scratch.png'
CHECKPOINT_NAME = 'supernet.pth'
NUM_CLASSES = 10
IN_CHANNELS = 1
FMNIST_SIDE = 28

Log = Callable[[str], None]


@dataclass(frozen=True)
class SupernetStudySpec:
    """What the study trains, scores and compares.

    Attributes:
        embed_dims, num_layers, num_heads, mlp_ratio, img_size, patch_size: the supernet (the
            largest subnet; head dim ``embed_dims / num_heads`` is shared by every subnet).
        depths, widths, mlp_ratios, resolutions: the search space's values (invalid
            combinations are left out, see :func:`mmvitscale.search.supernet.search_space`).
        super_images: supernet training images (the first N of a seeded shuffle of the train
            split).
        super_epochs: supernet training epochs.
        num_random: random subnets per sandwich step.
        subnets: K, the subnets scored (and retrained); the largest and smallest are included.
        scratch_images: from-scratch training images (the first N of the same shuffle).
        scratch_epochs: from-scratch training epochs per subnet.
        scratch_seeds: every subnet is trained from scratch once per seed ``s`` (init
            ``torch.manual_seed(1000 * s + 100 + i)``, data order ``1000 * s + i`` for subnet
            ``i``); the supernet and the data subsets follow ``seed``.
        skip_scratch: only score with the shared weights (no from-scratch runs, no tau).
        val_images: validation images (a seeded subset of the test split).
        batch_size, lr, weight_decay: AdamW training settings of both phases.
        seed: data subsets and order, supernet init and subnet sampling.
        log_every: training progress every N steps.
        data_root: folder with the Fashion-MNIST idx files (``None``: the default location).
    """

    embed_dims: int = 96
    num_layers: int = 8
    num_heads: int = 4
    mlp_ratio: float = 4.0
    img_size: int = 32
    patch_size: int = 4
    depths: Tuple[int, ...] = (2, 4, 6, 8)
    widths: Tuple[int, ...] = (48, 72, 96)
    mlp_ratios: Tuple[float, ...] = (2.0, 3.0, 4.0)
    resolutions: Tuple[int, ...] = (16, 24, 32)
    super_images: int = 10000
    super_epochs: int = 3
    num_random: int = 2
    subnets: int = 12
    scratch_images: int = 3000
    scratch_epochs: int = 2
    scratch_seeds: Tuple[int, ...] = (0, 1, 2)
    skip_scratch: bool = False
    val_images: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    log_every: int = 20
    data_root: Optional[str] = None

    @property
    def supernet(self) -> SubnetArch:
        """The supernet's architecture."""
        return SubnetArch(self.embed_dims, self.num_layers, self.num_heads, self.mlp_ratio,
                          self.img_size, self.patch_size)

    @property
    def pad(self) -> int:
        """Side the 28 px images are padded to before resizing to ``img_size``."""
        return max(self.img_size, FMNIST_SIDE)


# ---------------------------------------------------------------------------- inputs
def check_spec(spec: SupernetStudySpec) -> None:
    """Check every input before any work (the data files are looked up, not read).

    Raises:
        InputError: naming the field(s) at fault, ``detail`` giving the value: counts
            (``embed_dims`` ... ``log_every``) must be >= 1 (``subnets`` >= 2: the largest and
            the smallest are always scored), ``num_random`` and ``weight_decay`` >= 0,
            ``mlp_ratio`` and ``lr`` > 0; ``seed`` >= 0 and ``scratch_seeds`` distinct integers
            >= 0; ``embed_dims`` / ``num_heads`` must divide,
            ``img_size`` / ``patch_size`` too; the space lists must be non-empty and hold a
            subnet; ``data_root`` must hold Fashion-MNIST.
    """
    from ..datasets.fashion_mnist import FashionMNISTNotFoundError, source_dir
    for name in ('embed_dims', 'num_layers', 'num_heads', 'img_size', 'patch_size',
                 'super_images', 'super_epochs', 'scratch_images', 'scratch_epochs',
                 'val_images', 'batch_size', 'log_every'):
        value = getattr(spec, name)
        if value < 1:
            raise InputError(name, f'must be >= 1, got {value}')
    if spec.subnets < 2:
        raise InputError('subnets', f'must be >= 2 (the largest and the smallest subnet are '
                         f'always scored), got {spec.subnets}')
    for name in ('num_random', 'weight_decay'):
        value = getattr(spec, name)
        if not value >= 0:
            raise InputError(name, f'must be >= 0, got {value}')
    for name in ('mlp_ratio', 'lr'):
        value = getattr(spec, name)
        if not (value > 0 and math.isfinite(value)):
            raise InputError(name, f'must be > 0, got {value}')
    if spec.seed < 0:
        raise InputError('seed', f'must be >= 0, got {spec.seed}')
    problem = seed_list_error(spec.scratch_seeds)
    if problem:
        raise InputError('scratch_seeds', problem)
    if spec.embed_dims % spec.num_heads:
        raise InputError(('embed_dims', 'num_heads'), f'must divide (fixed head dim), got '
                         f'{spec.embed_dims} / {spec.num_heads}')
    if spec.img_size % spec.patch_size:
        raise InputError(('img_size', 'patch_size'), f'must divide, got {spec.img_size} / '
                         f'{spec.patch_size}')
    if spec.supernet.mlp_hidden < 1:
        raise InputError('mlp_ratio', f'gives no MLP hidden unit at embed_dims '
                         f'{spec.embed_dims}, got {spec.mlp_ratio}')
    for name in ('depths', 'widths', 'mlp_ratios', 'resolutions'):
        if not getattr(spec, name):
            raise InputError(name, 'must list at least one value, got none')
    try:
        build_space(spec)
    except ValueError:
        raise InputError(('depths', 'widths', 'mlp_ratios', 'resolutions'),
                         f'hold no subnet of the supernet {spec.supernet.label} (head dim '
                         f'{spec.supernet.head_dim}), got {list(spec.depths)} / '
                         f'{list(spec.widths)} / {list(spec.mlp_ratios)} / '
                         f'{list(spec.resolutions)}') from None
    try:
        source_dir(spec.data_root)
    except FashionMNISTNotFoundError as err:
        raise InputError('data_root', str(err)) from None


def build_space(spec: SupernetStudySpec) -> Tuple[SubnetArch, List[SubnetArch]]:
    """The supernet and its search space (the supernet appended when the lists leave it out).

    Raises ``ValueError`` when no combination of the lists is a subnet of the supernet.
    """
    sup = spec.supernet
    space = search_space(sup, spec.depths, spec.widths, spec.mlp_ratios, spec.resolutions)
    if sup not in space:
        space.append(sup)
    return sup, space


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True)
class StudyData:
    """Normalised images (``N, 1, img_size, img_size``) and int64 labels of the three sets."""

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    scratch_images: Tensor
    scratch_labels: Tensor


def load_study_data(spec: SupernetStudySpec) -> StudyData:
    """The supernet, validation and from-scratch sets of ``spec``.

    One generator seeded with ``spec.seed`` shuffles the train split, then the test split; the
    supernet trains on the first ``super_images`` of the train shuffle, the from-scratch runs on
    the first ``scratch_images`` of the same order, validation is the first ``val_images`` of
    the test shuffle. Images are zero-padded (in normalised units) to ``max(img_size, 28)`` and
    resized to ``img_size``.
    """
    from ..datasets.fashion_mnist import load_split
    tr_x, tr_y = load_split('train', spec.data_root)
    va_x, va_y = load_split('test', spec.data_root)
    g = torch.Generator().manual_seed(spec.seed)
    tr_idx = torch.randperm(len(tr_x), generator=g)
    va_idx = torch.randperm(len(va_x), generator=g)[:spec.val_images].numpy()

    def images(x: Any, idx: Any) -> Tensor:
        return resize(prepare_images(x[idx], spec.pad), spec.img_size)

    def labels(y: Any, idx: Any) -> Tensor:
        return torch.from_numpy(y[idx].astype('int64'))

    super_idx = tr_idx[:spec.super_images].numpy()
    sc_idx = tr_idx[:min(spec.scratch_images, len(tr_idx))].numpy()
    return StudyData(images(tr_x, super_idx), labels(tr_y, super_idx), images(va_x, va_idx),
                     labels(va_y, va_idx), images(tr_x, sc_idx), labels(tr_y, sc_idx))


# ---------------------------------------------------------------------------- the phases
def train_shared_supernet(spec: SupernetStudySpec, sup: SubnetArch, space: Sequence[SubnetArch],
                          data: StudyData, log: Optional[Log] = None
                          ) -> Tuple[SlicedViT, Dict[str, float]]:
    """A :class:`SlicedViT` of ``sup`` (initialised under ``torch.manual_seed(spec.seed)``)
    trained with the sandwich rule over ``space``; returns it and its training stats
    (``steps``, ``final_loss``, ``seconds``). ``log`` gets the training progress lines."""
    torch.manual_seed(spec.seed)
    supernet = SlicedViT(sup, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES)
    train_stats = train_supernet(supernet, space, data.train_images, data.train_labels,
                                 spec.super_epochs, spec.batch_size, spec.lr, spec.weight_decay,
                                 spec.num_random, spec.seed, log=log, log_every=spec.log_every)
    return supernet, train_stats


def save_supernet(supernet: SlicedViT, path: str) -> None:
    """Save ``{'state_dict', 'arch'}`` of the supernet to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(dict(state_dict=supernet.state_dict(), arch=supernet.arch.as_dict()), tmp)


def score_shared(supernet: SlicedViT, archs: Sequence[SubnetArch],
                 data: StudyData) -> List[Dict[str, Any]]:
    """Shared-weight top-1 (fraction) of every subnet on the validation set: per subnet
    ``arch``, ``label``, ``accuracy``, ``seconds`` and ``params`` (its standalone model)."""
    scores = score_subnets(supernet, archs, data.val_images, data.val_labels)
    for s, arch in zip(scores, archs):
        s['params'] = sum(p.numel() for p in ViTClassifier(arch).parameters())
    return scores


def train_from_scratch(spec: SupernetStudySpec, archs: Sequence[SubnetArch],
                       scores: Sequence[Dict[str, Any]], data: StudyData,
                       on_result: Optional[Callable[[int, int, Dict[str, Any], int, float],
                                                    None]] = None
                       ) -> None:
    """Train every subnet of ``archs`` from scratch once per seed of ``spec.scratch_seeds``,
    seed-major (subnet ``i`` under seed ``s``: ``torch.manual_seed(1000 * s + 100 + i)``, data
    order ``1000 * s + i``), and add to ``scores[i]``: ``scratch_seeds``,
    ``scratch_accuracies`` (fraction on the validation set, per seed), their mean
    ``scratch_accuracy`` and ``scratch_seconds`` (all seeds). After each training
    ``on_result(k, total, scores[i], seed, seconds)`` (``k`` trainings done of ``total``; that
    training's seconds)."""
    for s in scores:
        s.update(scratch_seeds=[], scratch_accuracies=[], scratch_seconds=0.0)
    total, done = len(archs) * len(spec.scratch_seeds), 0
    for seed in spec.scratch_seeds:
        for i, (s, arch) in enumerate(zip(scores, archs)):
            torch.manual_seed(1000 * seed + 100 + i)
            model = ViTClassifier(arch, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES)
            st = train_model(model, data.scratch_images, data.scratch_labels, arch.img_size,
                             spec.scratch_epochs, spec.batch_size, spec.lr, spec.weight_decay,
                             1000 * seed + i, log=None)
            model.eval()
            s['scratch_seeds'].append(seed)
            s['scratch_accuracies'].append(evaluate(model, data.val_images, data.val_labels,
                                                    arch.img_size))
            s['scratch_accuracy'] = sum(s['scratch_accuracies']) / len(s['scratch_accuracies'])
            s['scratch_seconds'] += st['seconds']
            done += 1
            if on_result is not None:
                on_result(done, total, s, seed, st['seconds'])


def rank_agreement(scores: Sequence[Mapping[str, Any]]) -> stats.KendallResult:
    """Kendall's tau-b between the shared-weight ``accuracy`` and the (seed-mean)
    ``scratch_accuracy`` of ``scores`` and its two-sided p-value
    (:func:`mmvitscale.experiments.stats.kendall_tau`, as ``scipy.stats.kendalltau``: exact
    without ties up to 33 subnets, else asymptotic; ``nan`` with a constant side)."""
    return stats.kendall_tau([s['accuracy'] for s in scores],
                             [s['scratch_accuracy'] for s in scores])


def seed_statistics(scores: Sequence[Mapping[str, Any]], draws: int = 2000
                    ) -> Dict[str, Any]:
    """Over the scratch seeds of ``scores``: ``tau`` (as :func:`rank_agreement`) with its 95%
    bootstrap interval ``ci95`` over subnets and ``per_seed`` taus
    (:func:`mmvitscale.experiments.stats.tau_over_seeds`), and ``seed_agreement`` of the
    scratch accuracies between seeds (:func:`mmvitscale.experiments.stats.seed_agreement`)."""
    seeds = list(scores[0].get('scratch_seeds', [])) if scores else []
    per_seed = [[s['scratch_accuracies'][j] for s in scores] for j in range(len(seeds))]
    out = stats.tau_over_seeds([s['accuracy'] for s in scores], per_seed, draws=draws)
    out['seed_agreement'] = stats.seed_agreement(per_seed, seeds)
    return out


# ---------------------------------------------------------------------------- report
def build_report(sup: SubnetArch, space_size: int, config: Mapping[str, Any],
                 supernet_train: Mapping[str, float], scores: Sequence[Mapping[str, Any]],
                 kendall: Optional[stats.KendallResult], wall_seconds: float,
                 load_start: str, command: str) -> Dict[str, Any]:
    """The study report (JSON-ready).

    Keys: ``supernet`` (``arch``, ``label``), ``search_space_size``, ``config`` (as given: the
    caller's settings), ``supernet_train``, ``subnets`` (``scores``), ``kendall_tau`` and
    ``kendall_p`` (``None`` without from-scratch runs), ``kendall`` (``tau``, ``p_value``,
    ``n``, ``method``; ``None`` likewise), ``over_seeds`` (:func:`seed_statistics`; ``None``
    likewise), ``wall_seconds``, ``load_start``, ``load_end`` (the load average now),
    ``torch``, ``python``, ``command``.
    """
    return dict(
        supernet=dict(arch=sup.as_dict(), label=sup.label),
        search_space_size=space_size,
        config=dict(config),
        supernet_train=dict(supernet_train),
        subnets=list(scores),
        kendall_tau=None if kendall is None else kendall.tau,
        kendall_p=None if kendall is None else kendall.p_value,
        kendall=None if kendall is None else kendall.as_dict(),
        over_seeds=None if kendall is None else seed_statistics(scores),
        wall_seconds=wall_seconds,
        load_start=load_start,
        load_end=loadavg_text(),
        torch=torch.__version__,
        python=platform.python_version(),
        command=command,
    )


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: setup, Kendall tau with its p-value, interval, per-seed taus and
    the seed-to-seed ceiling, one row per subnet."""
    cfg = report['config']
    lines = ['# Weight-sharing supernet scorer', '',
             f"Supernet `{report['supernet']['label']}`, sandwich rule (largest + smallest + "
             f"{cfg['num_random']} random), {cfg['super_images']} "
             f"images x {cfg['super_epochs']} epochs "
             f"({report['supernet_train']['seconds']:.0f} s), seed {cfg.get('seed', 0)}. "
             f"Validation: {cfg['val_images']} Fashion-MNIST test images.", '']
    over = report.get('over_seeds') or {}
    seeds = cfg.get('scratch_seeds', [])
    if report.get('kendall_tau') is not None:
        ci = over.get('ci95', [math.nan, math.nan])
        lines += [f"**Kendall tau (supernet score vs. scratch accuracy, mean over "
                  f"{len(seeds)} seed(s) {list(seeds)}): {report['kendall_tau']:.3f}** "
                  f"(p = {report['kendall_p']:.3g}, K = {len(report['subnets'])}; 95% "
                  f"bootstrap interval over subnets {fmt_tau(ci[0])} to {fmt_tau(ci[1])}; per seed "
                  f"{', '.join(fmt_tau(t) for t in over.get('per_seed', []))}; scratch budget "
                  f"{cfg['scratch_images']} images x "
                  f"{cfg['scratch_epochs']} epochs each)", '']
        agree = over.get('seed_agreement', {})
        if agree.get('pairs'):
            lines += [f"**Seed-to-seed ceiling:** two from-scratch trainings rank the subnets "
                      f"alike at Kendall tau {fmt_tau(agree['mean_tau'])} on average ("
                      + '; '.join(f"seeds {a['seeds'][0]} vs {a['seeds'][1]}: {fmt_tau(a['tau'])}"
                                  for a in agree['pairs'])
                      + '). No scorer can be expected to agree with one scratch training better '
                      'than another does.', '']
    lines += ['| subnet | params | supernet acc | scratch acc (mean) | scratch acc per seed |',
              '|---|---:|---:|---:|---|']
    for s in report['subnets']:
        sc = s.get('scratch_accuracy')
        per = ', '.join(f'{v:.4f}' for v in s.get('scratch_accuracies', []))
        lines.append(f"| `{s['label']}` | {s['params']:,} | {s['accuracy']:.4f} | "
                     f"{'-' if sc is None else f'{sc:.4f}'} | {per or '-'} |")
    lines += ['', f"Total wall time {report['wall_seconds']:.0f} s, torch threads "
              f"{cfg['threads']}, load average at start "
              f"{report['load_start']} / end {report['load_end']}.", '']
    return '\n'.join(lines)


def plot(report: Mapping[str, Any], path: str) -> None:
    """Seed-mean scratch against shared-weight accuracy, one labelled point per subnet, error
    bars the 95% Student-t interval over the scratch seeds (with 2 or more), saved at ``path``
    (needs the from-scratch results)."""
    plt = pyplot()
    subs = report['subnets']
    xs = [s['accuracy'] for s in subs]
    ys = [s['scratch_accuracy'] for s in subs]
    fig, ax = plt.subplots(figsize=(6, 5))
    if all(len(s.get('scratch_accuracies', [])) > 1 for s in subs):
        half = [stats.t_interval(s['scratch_accuracies']).half_width for s in subs]
        ax.errorbar(xs, ys, yerr=half, fmt='none', ecolor='0.6', elinewidth=0.8, zorder=1)
    ax.scatter(xs, ys, zorder=2)
    for s in subs:
        ax.annotate(s['label'], (s['accuracy'], s['scratch_accuracy']), fontsize=6)
    ax.set_xlabel('supernet (shared-weight) accuracy')
    ax.set_ylabel('trained-from-scratch accuracy (seed mean, 95% interval)')
    ci = (report.get('over_seeds') or {}).get('ci95', [math.nan, math.nan])
    ax.set_title(f"Kendall tau = {report['kendall_tau']:.3f} [{fmt_tau(ci[0])}, {fmt_tau(ci[1])}] "
                 f"(K={len(xs)})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(report: Mapping[str, Any], work_dir: str) -> Dict[str, str]:
    """Write ``supernet_scores.json`` and ``.md`` and, with a tau, ``supernet_vs_scratch.png``
    to ``work_dir`` atomically; returns the written paths by kind (``json``, ``md``, ``png``)."""
    os.makedirs(work_dir, exist_ok=True)
    stem = osp.join(work_dir, REPORT_STEM)
    paths = dict(json=stem + '.json', md=stem + '.md')
    atomic_write(paths['json'], json.dumps(report, indent=2) + '\n')
    atomic_write(paths['md'], to_markdown(report))
    if report.get('kendall_tau') is not None:
        paths['png'] = osp.join(work_dir, PLOT_NAME)
        plot(report, paths['png'])
    return paths


def spec_from_flags(flags: Any) -> SupernetStudySpec:
    """The study inputs named by ``tools/supernet_scorer.py``'s flags (a namespace whose
    attributes are the spec's fields)."""
    f = flags
    return SupernetStudySpec(
        embed_dims=f.embed_dims, num_layers=f.num_layers, num_heads=f.num_heads,
        mlp_ratio=f.mlp_ratio, img_size=f.img_size, patch_size=f.patch_size,
        depths=tuple(f.depths), widths=tuple(f.widths), mlp_ratios=tuple(f.mlp_ratios),
        resolutions=tuple(f.resolutions), super_images=f.super_images,
        super_epochs=f.super_epochs, num_random=f.num_random, subnets=f.subnets,
        scratch_images=f.scratch_images, scratch_epochs=f.scratch_epochs,
        scratch_seeds=tuple(f.scratch_seeds), skip_scratch=f.skip_scratch,
        val_images=f.val_images, batch_size=f.batch_size, lr=f.lr, weight_decay=f.weight_decay,
        seed=f.seed, log_every=f.log_every, data_root=f.data_root)


def run_study(spec: SupernetStudySpec, work_dir: str, config: Mapping[str, Any], command: str,
              log: Log) -> Dict[str, Any]:
    """Train the supernet, score the subnets, train each from scratch per seed (unless
    ``skip_scratch``), and write the report to ``work_dir``; ``log`` gets a progress line per
    stage and per trained subnet with the ETA. Returns the report."""
    t_start = time.perf_counter()
    load_start = loadavg_text()
    sup, space = build_space(spec)
    log(f'supernet {sup.label}; search space {len(space)} subnets')

    data = load_study_data(spec)
    log(f'training the supernet on {len(data.train_images)} images x {spec.super_epochs} '
        'epochs')
    supernet, sn_stats = train_shared_supernet(spec, sup, space, data, log=log)
    save_supernet(supernet, osp.join(work_dir, CHECKPOINT_NAME))

    archs = pick_subnets(space, sup, spec.subnets, spec.seed)
    log(f'scoring {len(archs)} subnets with the shared weights')
    scores = score_shared(supernet, archs, data)
    for s in scores:
        log(f"  {s['label']}: supernet acc {s['accuracy']:.4f}")

    kendall = None
    if not spec.skip_scratch:
        clock = Eta([s['label'] for _ in spec.scratch_seeds for s in scores])

        def progress(k: int, n: int, s: Dict[str, Any], seed: int, took: float) -> None:
            count, times = clock.finished(s['label'], took)
            log(f"  scratch {count} {s['label']} seed {seed}: acc "
                f"{s['scratch_accuracies'][-1]:.4f} ({took:.1f}s); {times}")

        train_from_scratch(spec, archs, scores, data, on_result=progress)
        kendall = rank_agreement(scores)
        log(f'Kendall tau = {kendall.tau:.3f} (p = {kendall.p_value:.3g}, n = {kendall.n}, '
            f'{kendall.method}; scratch accuracy averaged over {len(spec.scratch_seeds)} '
            'seed(s))')

    report = build_report(sup, len(space), config, sn_stats, scores, kendall,
                          time.perf_counter() - t_start, load_start, command)
    over = report['over_seeds']
    if over is not None:
        log(f"95% bootstrap interval {over['ci95'][0]:+.3f} to {over['ci95'][1]:+.3f}; per seed "
            f"{', '.join(f'{t:+.3f}' for t in over['per_seed'])}; seed-to-seed ceiling "
            f"{over['seed_agreement']['mean_tau']:+.3f}")
    write_report(report, work_dir)
    return report
