"""As-ViT topology search (REINFORCE on training-free proxies) and budgeted growth.

**Search** (:func:`reinforce_search`): one independent categorical per decision of
:data:`SPACE` (stage-1 tokenizer kernel, stage 2-4 downsampling kernels, final-stage heads,
window splits of stages 1-3 (stage 4 is global), MLP ratio per stage). Each step samples a
topology, builds it as the narrow proxy (width 32, one block per stage) and scores it with
``score_fn(arch) -> {'ntk_condition': kappa, 'length_distortion': L}``. The reward is
``-(kappa_t - kappa_{t-1}) / range(kappa) + (L_t - L_{t-1}) / range(L)``, both ranges
(max - min) over the last 20 finite samples (0 for the first sample; -1 when a score is not
finite). Advantage = reward - baseline, the baseline a moving average (momentum 0.9, starts
at 0); the policy gradient ``-advantage * log p(sample)`` goes to Adam (lr 0.08). The seed
topology is the policy's most likely choice per decision.

**Growth** (:func:`grow_family`, As-ViT's ``search/grow.py``): from the seed topology at
depth ``[1, 1, 1, 1]`` and a tiny width, each step tries one more block in each of the 4
stages times a width ``round(width * (1 + r))``, ``r`` in ``{0.05, 0.10, 0.15, 0.20}`` (up to
16 candidates; equal widths once), drops those whose member (``width_scale`` times wider)
is over the budget, ranks the rest by NTK condition (ascending) and length distortion
(descending), dense ranks as the reference, and keeps the one with the smallest sum of ranks
(ties: :func:`_pick`). It stops when no candidate fits or a member reaches ``stop_at``; family
members are the largest steps under fractions of the budget (default 1/4, 1/2, 1 for small /
base / large), moved so that the members are distinct steps (a short trajectory puts them on
its last steps). Widths need not be divisible by the heads (heads of ``dim // heads``
channels, as the reference).

**Logs and resume**: both write JSON Lines, a header then one record per candidate (and per
growth step); every record is flushed and fsynced. Sampling at step ``t`` uses a generator
seeded from ``(seed, t)``, so on resume the run re-executes from step 0, takes the scores of
logged candidates from the log instead of recomputing them (checking that the sample and the
reward agree) and so restores logits, Adam state and baseline exactly. A truncated last line
(interruption mid-write) is dropped. JSON uses ``Infinity`` / ``NaN`` for non-finite scores.
"""
import json
import math
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..fileio import atomic_write, pyplot, save_figure
from ..models.asvit import AsViT, asvit_flops, asvit_params, make_asvit_arch, stage_heads

SPACE: Tuple[Tuple[str, Tuple[int, ...]], ...] = (
    ('tokenizer_kernel', (4, 5, 6, 7, 8)),
    ('down_kernel_2', (2, 3, 4)),
    ('down_kernel_3', (2, 3, 4)),
    ('down_kernel_4', (2, 3, 4)),
    ('heads', (16, 32, 64)),
    ('split_1', (2, 4, 8)),
    ('split_2', (1, 2, 4)),
    ('split_3', (1, 2)),
    ('mlp_ratio_1', (2, 3, 4, 5, 6)),
    ('mlp_ratio_2', (2, 3, 4, 5, 6)),
    ('mlp_ratio_3', (2, 3, 4, 5, 6)),
    ('mlp_ratio_4', (2, 3, 4, 5, 6)),
)
GROWTH_RATIOS = (0.05, 0.10, 0.15, 0.20)
PUBLISHED_SEED = '8,2,3|4,1,2|4,1,4|4,1,6|32'  # As-ViT's seed topology (its README)
PUBLISHED_LARGE = '8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180'  # As-ViT Large (its README)
# As-ViT's search/grow.py: scored at stage-1 width 8 (HIDDEN_DIM) and up, members 4x wider
# (SCALE_WIDTH) with its 1000-class head, stop once a member has >= 80M parameters, none above
# 110M (PARAM_LIM); grow_family's docstring lists where it departs from that script
GROWTH_REFERENCE: Dict[str, Any] = dict(init_width=8, width_scale=4, head_classes=1000,
                                        budget_params=110e6, stop_at=80e6)
# As-ViT's search/reinforce.py + lib/procedures/teg.py: 224 px, batch 16, 5 repeats, 10 points
REFERENCE_PROXY_SETTINGS: Dict[str, Any] = dict(img_size=224, batch_size=16, num_inits=5,
                                                num_points=10, radius=1.0, endpoint=True)
REWARD_WINDOW = 20
# logged in search / growth headers: logs scored with another AsViT network are not resumed
# (2: the network equal to the public As-ViT code; logs without it came from the strided-conv
# variant before)
NETWORK_VERSION = 'asvit-2'
ScoreFn = Callable[[Dict[str, Any]], Mapping[str, float]]

__all__ = ['SPACE', 'REFERENCE_PROXY_SETTINGS', 'GROWTH_REFERENCE', 'PUBLISHED_SEED',
           'PUBLISHED_LARGE', 'choices_to_arch', 'genotype_to_arch', 'arch_to_genotype',
           'arch_to_choices', 'proxy_score_fn', 'reinforce_search', 'plot_search', 'grow_family',
           'plot_growth', 'asvit_params', 'asvit_flops', 'write_arch_file', 'SearchOutcome',
           'GrowthOutcome']


# ---------------------------------------------------------------------------- helpers
def choices_to_arch(choices: Mapping[str, int], width: int = 32,
                    depths: Sequence[int] = (1, 1, 1, 1)) -> Dict[str, Any]:
    """Decision values (names of :data:`SPACE`) -> an :class:`AsViT` arch dict."""
    return dict(width=width, depths=list(depths), heads=int(choices['heads']),
                mlp_ratios=[int(choices[f'mlp_ratio_{i}']) for i in range(1, 5)],
                tokenizer_kernel=int(choices['tokenizer_kernel']),
                down_kernels=[int(choices[f'down_kernel_{i}']) for i in range(2, 5)],
                splits=[int(choices[f'split_{i}']) for i in range(1, 4)] + [1])


def arch_to_choices(arch: Mapping[str, Any]) -> Dict[str, int]:
    """Inverse of :func:`choices_to_arch` (width and depths dropped)."""
    out = dict(tokenizer_kernel=int(arch['tokenizer_kernel']), heads=int(arch['heads']))
    out.update({f'down_kernel_{i}': int(k) for i, k in enumerate(arch['down_kernels'], 2)})
    out.update({f'split_{i}': int(v) for i, v in enumerate(arch['splits'][:3], 1)})
    out.update({f'mlp_ratio_{i}': int(r) for i, r in enumerate(arch['mlp_ratios'], 1)})
    return {name: out[name] for name, _ in SPACE}


def genotype_to_arch(genotype: str, width: Optional[int] = None,
                     depths: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """As-ViT's arch string -> an :class:`AsViT` arch dict.

    A seed ``k1,s1,r1|k2,s2,r2|k3,s3,r3|k4,1,r4|heads`` (tokenizer / downsampling kernel, window
    split and MLP ratio per stage, final heads; e.g. the published seed
    ``8,2,3|4,1,2|4,1,4|4,1,6|32``) gets ``width`` (default 32) and ``depths`` (default one
    block per stage). A grown member as As-ViT's README writes it carries both: a fourth value
    per stage is its depth and a second head value its width (As-ViT Large:
    ``8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180``); passing a different ``width`` / ``depths`` for
    such a string raises.
    """
    parts = str(genotype).split('|')
    try:
        stages = [[int(v) for v in p.split(',')] for p in parts[:-1]]
        head = [int(v) for v in parts[-1].split(',')]
    except ValueError:
        stages, head = [], []
    lengths = {len(st) for st in stages}
    if len(stages) != 4 or lengths not in ({3}, {4}) or len(head) != (1 if lengths == {3} else 2):
        raise ValueError(f'genotype must look like "8,2,3|4,1,2|4,1,4|4,1,6|32" (kernel, split, '
                         f'MLP ratio per stage, then heads) or, grown, "8,2,3,5|4,1,2,2|4,1,4,5|'
                         f'4,1,6,2|32,180" (and depth per stage, then width), got {genotype!r}')
    if lengths == {4}:
        own_width, own_depths = head[1], [st[3] for st in stages]
        if (width is not None and width != own_width) or (
                depths is not None and list(depths) != own_depths):
            raise ValueError(f'genotype {genotype!r} has width {own_width} and depths '
                             f'{own_depths}; got width={width!r}, depths={depths!r}')
        width, depths = own_width, own_depths
    return dict(width=32 if width is None else width,
                depths=[1, 1, 1, 1] if depths is None else list(depths), heads=head[0],
                mlp_ratios=[st[2] for st in stages], tokenizer_kernel=stages[0][0],
                down_kernels=[st[0] for st in stages[1:]], splits=[st[1] for st in stages])


def arch_to_genotype(arch: Mapping[str, Any], grown: bool = False) -> str:
    """Inverse of :func:`genotype_to_arch`: the seed string (width and depths dropped), or with
    ``grown`` the member string As-ViT's README writes (depth per stage, width after the heads).
    """
    kernels = [arch['tokenizer_kernel'], *arch['down_kernels']]
    stages = ['%d,%d,%g' % (k, s, r) for k, s, r in zip(kernels, arch['splits'],
                                                        arch['mlp_ratios'])]
    head = str(_heads_of(arch)[-1])
    if grown:
        stages = [f'{st},{d}' for st, d in zip(stages, arch['depths'])]
        head += f",{arch['width']}"
    return '|'.join(stages + [head])


def proxy_score_fn(img_size: int = 32, batch_size: int = 8, num_inits: int = 1,
                   num_points: int = 10, seed: int = 0, in_channels: int = 3,
                   radius: Optional[float] = None, endpoint: bool = False,
                   device: Optional[str] = None) -> ScoreFn:
    """As-ViT proxies of an arch dict on ``img_size`` inputs (last stage, average pooled,
    no final norm: As-ViT's ``forward_features(x)[1]``), on ``device`` (default: the CPU).

    Defaults are CPU-sized; ``proxy_score_fn(**REFERENCE_PROXY_SETTINGS)`` is As-ViT's search
    setting (224 px, batch 16, 5 inits, 10 points on a radius-1 circle with
    ``linspace(0, 2 pi, 10)`` angles). ``radius`` / ``endpoint``: see
    :func:`~mmvitscale.search.proxies.length_distortion`.
    """
    from .proxies import check_batch_size, check_radius, length_distortion, ntk_condition
    check_batch_size(batch_size)
    check_radius(radius)

    def score(arch: Dict[str, Any]) -> Dict[str, float]:
        def build() -> AsViT:
            model = AsViT(arch, img_size=img_size, in_channels=in_channels,
                          out_type='avg_featmap', final_norm=False)
            model.init_weights()
            return model if device is None else model.to(device)

        shape = (in_channels, img_size, img_size)
        return dict(ntk_condition=ntk_condition(build, (batch_size, *shape), num_inits, seed),
                    length_distortion=length_distortion(build, shape, num_points, num_inits,
                                                        seed, radius, endpoint))

    return score


def arch_file_text(arch: Mapping[str, Any], img_size: Optional[int] = None,
                   header: Sequence[str] = ()) -> str:
    items = ', '.join(f'{k}={v!r}' for k, v in arch.items())
    lines = [f'# {h}'.rstrip() for h in header] + [f'arch = dict({items})']
    if img_size is not None:
        lines.append(f'img_size = {int(img_size)}')
    return '\n'.join(lines) + '\n'


def write_arch_file(path: str, arch: Mapping[str, Any], img_size: Optional[int] = None,
                    header: Sequence[str] = ()) -> str:
    """Write ``arch = dict(...)`` (and ``img_size``) atomically, loadable by mmengine Config."""
    atomic_write(path, arch_file_text(arch, img_size, header))
    return path


def _logger():
    from mmengine.logging import MMLogger
    return MMLogger.get_current_instance()


def _finite(*values: Optional[float]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _scores(score_fn: ScoreFn, arch: Dict[str, Any]) -> Tuple[float, float]:
    out = score_fn(arch)
    return float(out['ntk_condition']), float(out['length_distortion'])


class _JsonLog:
    """Append-only JSON Lines log: header check, truncated-tail repair, fsync per record."""

    def __init__(self, path: str, header: Dict[str, Any], resume: bool) -> None:
        self.path = path
        self.records: List[Dict[str, Any]] = []
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        if resume and osp.exists(path):
            self._load(header)
        else:
            with open(path, 'w', encoding='utf-8') as f:
                self._write(f, header)

    def _load(self, header: Dict[str, Any]) -> None:
        path = self.path
        with open(path, 'rb') as f:
            data = f.read()
        lines, good = data.split(b'\n'), 0
        parsed = []
        for i, line in enumerate(lines):
            if not line.strip():
                if i == len(lines) - 1:
                    break
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                if i == len(lines) - 1:  # interrupted mid-write: drop the partial record
                    break
                raise ValueError(f'{path}: line {i + 1} is not valid JSON; the log is corrupt')
            parsed.append(rec)
            good += len(line) + 1
        if not parsed:  # nothing usable: start over
            with open(path, 'w', encoding='utf-8') as f:
                self._write(f, header)
            return
        old = parsed[0]
        for key, value in header.items():
            if json.loads(json.dumps(value)) != old.get(key):
                raise ValueError(f'{path} was written with {key}={old.get(key)!r}, this run has '
                                 f'{key}={value!r}; pass resume=False or another log_path')
        if good < len(data):
            with open(path, 'r+b') as f:
                f.truncate(good)
        self.records = parsed[1:]

    @staticmethod
    def _write(f, record: Dict[str, Any]) -> None:
        f.write(json.dumps(record) + '\n')
        f.flush()
        os.fsync(f.fileno())

    def append(self, record: Dict[str, Any]) -> None:
        with open(self.path, 'a', encoding='utf-8') as f:
            self._write(f, record)
        self.records.append(record)


# ---------------------------------------------------------------------------- search
class _Reward:
    """``-d(kappa) / range + d(L) / range`` over the last ``window`` finite samples."""

    def __init__(self, window: int = REWARD_WINDOW) -> None:
        self.window = window
        self.ntk: List[float] = []
        self.ld: List[float] = []

    def __call__(self, ntk: float, ld: float) -> float:
        if not _finite(ntk, ld):
            return -1.0
        self.ntk.append(ntk)
        self.ld.append(ld)
        if len(self.ntk) == 1:
            return 0.0
        reward = 0.0
        for hist, sign in ((self.ntk, -1.0), (self.ld, 1.0)):
            recent = hist[-self.window:]
            span = max(recent) - min(recent)
            if span > 0:
                reward += sign * (hist[-1] - hist[-2]) / span
        return reward


class _Policy:
    """Independent categoricals, REINFORCE with a moving-average baseline and Adam."""

    def __init__(self, space: Sequence[Tuple[str, Tuple[int, ...]]], seed: int, lr: float,
                 momentum: float) -> None:
        self.space, self.seed, self.momentum = space, seed, momentum
        self.logits = [torch.zeros(len(opts), dtype=torch.float64, requires_grad=True)
                       for _, opts in space]
        self.optim = torch.optim.Adam(self.logits, lr=lr)
        self.baseline = 0.0

    def sample(self, step: int) -> List[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return [int(torch.multinomial(torch.softmax(lg.detach(), 0), 1, generator=gen))
                for lg in self.logits]

    def update(self, indices: Sequence[int], reward: float) -> float:
        advantage = reward - self.baseline
        self.baseline = self.momentum * self.baseline + (1 - self.momentum) * reward
        log_prob = sum(torch.log_softmax(lg, 0)[i] for lg, i in zip(self.logits, indices))
        self.optim.zero_grad()
        (-advantage * log_prob).backward()
        self.optim.step()
        return advantage

    def best(self) -> Dict[str, int]:
        return {name: opts[int(lg.detach().argmax())]
                for (name, opts), lg in zip(self.space, self.logits)}

    def probs(self) -> Dict[str, List[float]]:
        return {name: torch.softmax(lg.detach(), 0).tolist()
                for (name, _), lg in zip(self.space, self.logits)}


@dataclass
class SearchOutcome:
    """Result of :func:`reinforce_search`."""

    topology: Dict[str, Any]  # arch dict of the policy's most likely choices (proxy width)
    choices: Dict[str, int]
    probs: Dict[str, List[float]]
    logits: List[List[float]]
    baseline: float
    records: List[Dict[str, Any]] = field(default_factory=list)
    num_scored: int = 0  # candidates scored in this call (not taken from the log)
    history: List[Dict[str, List[float]]] = field(default_factory=list)  # probs after each step

    def confidence(self) -> Dict[str, Tuple[int, float]]:
        """``{decision: (chosen option, its policy probability)}``: how settled each choice
        is (uniform is ``1 / len(options)``)."""
        options = dict(SPACE)
        return {name: (choice, self.probs[name][options[name].index(choice)])
                for name, choice in self.choices.items()}


def reinforce_search(steps: int, seed: int, score_fn: Optional[ScoreFn], log_path: str,
                     resume: bool = True, lr: float = 0.08, momentum: float = 0.9,
                     proxy_width: int = 32, out_path: Optional[str] = None,
                     progress: bool = True,
                     score_settings: Optional[Mapping[str, Any]] = None) -> SearchOutcome:
    """REINFORCE over :data:`SPACE` (see the module docstring).

    Args:
        steps: candidates to sample in total (logged ones included on resume).
        seed: seeds the sampling (and the default ``score_fn``).
        score_fn: ``arch dict -> {'ntk_condition', 'length_distortion'}``; ``None`` uses
            :func:`proxy_score_fn` (32 px, batch 8, one init).
        log_path: JSON Lines log; with ``resume`` an existing log (same settings) is replayed.
        out_path: optional ``arch = dict(...)`` file for the seed topology.
        score_settings: JSON-able description of ``score_fn`` (e.g. the proxy settings),
            stored in the log header: a resume with other settings is refused instead of
            mixing scores. The header also records :data:`NETWORK_VERSION`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f'steps must be a non-negative integer, got {steps!r}')
    if score_fn is None:
        score_fn = proxy_score_fn(seed=seed)
    header = dict(type='header', kind='reinforce', network=NETWORK_VERSION,
                  score_settings=dict(score_settings or {}), seed=seed, lr=lr, momentum=momentum,
                  proxy_width=proxy_width, space={n: list(o) for n, o in SPACE})
    log = _JsonLog(log_path, header, resume)
    logged = {r['step']: r for r in log.records if r.get('type') == 'candidate'}
    policy, reward_of = _Policy(SPACE, seed, lr, momentum), _Reward()
    logger, bar, scored = _logger(), None, 0
    history: List[Dict[str, List[float]]] = []
    if progress and steps:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(steps)
    for step in range(steps):
        indices = policy.sample(step)
        choices = {name: opts[i] for (name, opts), i in zip(SPACE, indices)}
        arch = choices_to_arch(choices, proxy_width)
        rec = logged.get(step)
        if rec is not None:
            if rec['indices'] != indices:
                raise ValueError(f'{log_path}: step {step} logged choices {rec["indices"]} but '
                                 f'the sampler drew {indices}; the log is from another run')
            ntk, ld = float(rec['ntk']), float(rec['ld'])
        else:
            ntk, ld = _scores(score_fn, arch)
            scored += 1
        reward = reward_of(ntk, ld)
        baseline = policy.baseline
        advantage = policy.update(indices, reward)
        history.append(policy.probs())
        if rec is None:
            log.append(dict(type='candidate', step=step, choices=choices, indices=indices,
                            arch=arch, ntk=ntk, ld=ld, reward=reward, baseline=baseline,
                            advantage=advantage))
            logger.info(f'topology search step {step}: ntk={ntk:.4g} ld={ld:.4g} '
                        f'reward={reward:+.3f} baseline={baseline:+.3f}')
        elif not math.isclose(rec['reward'], reward, rel_tol=1e-12, abs_tol=1e-12):
            raise ValueError(f'{log_path}: step {step} logged reward {rec["reward"]} but the '
                             f'replay gives {reward}; the log is from another run')
        if bar is not None:
            bar.update()
    if bar is not None:
        print()
    best = policy.best()
    topology = choices_to_arch(best, proxy_width)
    outcome = SearchOutcome(topology, best, policy.probs(),
                            [lg.detach().tolist() for lg in policy.logits], policy.baseline,
                            [r for r in log.records if r.get('type') == 'candidate'], scored,
                            history)
    if out_path:
        write_arch_file(out_path, topology, header=[
            f'As-ViT seed topology: REINFORCE, {steps} steps, seed {seed}',
            f'log: {log_path}', f'genotype: {arch_to_genotype(topology)}',
            'policy probability of each choice: ' + ', '.join(
                f'{name} {choice} ({p:.2f})'
                for name, (choice, p) in outcome.confidence().items())])
    return outcome


def plot_search(outcome: SearchOutcome, path: str,
                reference: Optional[Mapping[str, int]] = None) -> None:
    """One panel per decision of :data:`SPACE`: the policy's probability of each option
    after every step (dotted: uniform), the chosen option in bold and ``reference``'s choice
    (e.g. As-ViT's published seed through :func:`arch_to_choices`) starred in the legend."""
    plt = pyplot()

    if not outcome.history:
        raise ValueError('plot_search: the outcome has no steps to plot')
    steps = range(1, len(outcome.history) + 1)
    fig, axes = plt.subplots(3, 4, figsize=(14, 8), sharex=True, sharey=True)
    for ax, (name, opts) in zip(axes.flat, SPACE):
        for k, opt in enumerate(opts):
            chosen = outcome.choices[name] == opt
            star = '*' if reference is not None and reference.get(name) == opt else ''
            ax.plot(steps, [h[name][k] for h in outcome.history], lw=2.2 if chosen else 0.9,
                    label=f'{opt}{star}')
        ax.axhline(1 / len(opts), color='grey', ls=':', lw=0.8)
        ax.set_title(f'{name} -> {outcome.choices[name]}', fontsize=9)
        ax.legend(fontsize=7, ncol=len(opts), loc='upper left')
        ax.set_ylim(0, 1)
    for ax in axes[-1]:
        ax.set_xlabel('step')
    for ax in axes[:, 0]:
        ax.set_ylabel('policy probability')
    fig.suptitle(f'REINFORCE policy over {len(outcome.history)} steps '
                 f'(bold: chosen{"; *: reference" if reference is not None else ""})')
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------- growth
def _heads_of(arch: Mapping[str, Any]) -> Tuple[int, ...]:
    heads = arch['heads']
    return stage_heads(heads) if isinstance(heads, int) else tuple(heads)


def _ranks(values: Sequence[float], descending: bool) -> List[int]:
    """0 = best, ties share a rank and the next value takes the next rank (As-ViT's ranking
    in ``grow_step``); non-finite values rank last."""
    from ..stats import ranks
    return [int(r) for r in ranks(values, higher_is_better=descending, method='dense')]


def _relative_range(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if not finite or max(finite) == 0:
        return 0.0
    return (max(finite) - min(finite)) / abs(max(finite))


TIE_BREAKS = ('expressive', 'reference')


def _pick(cands: Sequence[Mapping[str, Any]], tie_break: str = 'expressive'
          ) -> Tuple[int, int]:
    """Index of the best candidate and its rank sum: smallest sum of the NTK rank (ascending)
    and the length-distortion rank (descending). When the two best sums tie, the criterion with
    the larger relative range ``(max - min) / max`` decides between those two: the lower NTK,
    or (``tie_break='expressive'``) the higher distortion; ``'reference'`` is As-ViT's code,
    whose ``argmin`` takes the lower value for either, so for the distortion the less
    expressive network. Then enumeration order."""
    if tie_break not in TIE_BREAKS:
        raise ValueError(f'tie_break must be one of {TIE_BREAKS}, got {tie_break!r}')
    ntk = [c['ntk'] for c in cands]
    ld = [c['ld'] for c in cands]
    sums = [a + b for a, b in zip(_ranks(ntk, False), _ranks(ld, True))]
    order = sorted(range(len(cands)), key=lambda i: sums[i])
    best = order[0]
    if len(order) > 1 and sums[order[1]] == sums[best]:
        a, b = order[0], order[1]
        if _relative_range(ntk) >= _relative_range(ld):
            best = b if ntk[b] < ntk[a] else a
        elif tie_break == 'reference':
            best = b if ld[b] < ld[a] else a
        else:
            best = b if ld[b] > ld[a] else a
    return best, sums[best]


def _head_params(dim: int, num_classes: int) -> int:
    """As-ViT's classification head: Linear(dim, dim) -> Tanh -> Linear(dim, num_classes)."""
    return dim * dim + dim + dim * num_classes + num_classes if num_classes else 0


@dataclass
class GrowthOutcome:
    """Result of :func:`grow_family`."""

    trajectory: List[Dict[str, Any]]  # {'step', 'arch', 'cost', 'scored'}, cost increasing
    family: Dict[str, Dict[str, Any]]  # size -> trajectory entry
    files: Dict[str, str] = field(default_factory=dict)
    cost_kind: str = 'params'
    budget: float = 0.0
    num_scored: int = 0


def plot_growth(outcome: GrowthOutcome, path: str) -> None:
    """Two panels over the growth steps: the members' cost with the family marked and the
    budget drawn, and blocks per stage (stacked) with the stage-1 width."""
    plt = pyplot()

    traj = outcome.trajectory
    steps = [t['step'] for t in traj]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax.plot(steps, [t['cost'] for t in traj], marker='.', color='k')
    ax.axhline(outcome.budget, color='r', ls='--', lw=0.8, label='budget')
    for size, member in outcome.family.items():
        ax.annotate(size, (member['step'], member['cost']), textcoords='offset points',
                    xytext=(-10, 8), fontsize=8, color='C3')
        ax.plot(member['step'], member['cost'], 'o', color='C3')
    ax.set_xlabel('growth step')
    ax.set_ylabel(outcome.cost_kind)
    ax.legend(fontsize=8)
    bottom = [0] * len(traj)
    for stage in range(4):
        depth = [t['arch']['depths'][stage] for t in traj]
        bx.bar(steps, depth, bottom=bottom, label=f'stage {stage + 1}')
        bottom = [b + d for b, d in zip(bottom, depth)]
    bx.set_xlabel('growth step')
    bx.set_ylabel('blocks')
    wx = bx.twinx()
    wx.plot(steps, [t['arch']['width'] for t in traj], color='k', marker='.', label='width')
    wx.set_ylabel('stage-1 width of the member')
    bx.legend(fontsize=8, loc='upper left')
    fig.suptitle(f'growth: {len(traj) - 1} steps, {outcome.num_scored} candidates scored now')
    fig.tight_layout()
    save_figure(fig, path)


def grow_family(seed_topology: Mapping[str, Any], budget_params: Optional[float] = None,
                budget_flops: Optional[float] = None, seed: int = 0,
                log_path: str = 'work_dirs/asvit_growth.jsonl',
                sizes: Sequence[str] = ('small', 'base', 'large'),
                score_fn: Optional[ScoreFn] = None, init_width: Optional[int] = None,
                ratios: Sequence[float] = GROWTH_RATIOS, img_size: int = 224,
                in_channels: int = 3, size_fractions: Optional[Sequence[float]] = None,
                out_dir: Optional[str] = None, resume: bool = True, max_steps: int = 1000,
                progress: bool = True,
                score_settings: Optional[Mapping[str, Any]] = None, width_scale: int = 1,
                head_classes: int = 0, stop_at: Optional[float] = None,
                tie_break: str = 'expressive') -> GrowthOutcome:
    """Grow a family of AsViTs from a seed topology under a parameter or FLOPs budget.

    Each step tries one more block in each stage times each width ``round(width * (1 + r))``
    for ``r`` in ``ratios`` (equal widths once), costs each candidate at ``width_scale`` times
    that width, drops those over the budget, scores the rest at that width and keeps the best
    by :func:`_pick`. ``GROWTH_REFERENCE`` holds As-ViT's settings (``search/grow.py``: width
    8, networks costed and built 4x wider than scored, parameters with its 1000-class head, stop
    at 80M, never above 110M). Differences from that script: when the two best rank sums tie
    and the length distortion decides, the higher distortion wins (the script's ``argmin``
    keeps the lower, less expressive one); non-finite scores rank last for both proxies; a
    starting network over the budget raises ``ValueError`` instead of growing nothing.

    Args:
        seed_topology: arch dict (e.g. :attr:`SearchOutcome.topology`); its kernels, splits,
            heads and MLP ratios are kept, depth restarts at ``[1, 1, 1, 1]``.
        budget_params / budget_flops: exactly one; parameters (with ``head_classes``' head),
            or FLOPs (:func:`asvit_flops`, get_complexity's convention) at ``img_size``, of
            the network at ``width_scale`` times the scored width.
        score_fn: as in :func:`reinforce_search`, called on each scored (narrow) arch;
            ``None`` uses :func:`proxy_score_fn` seeded with ``seed``.
        init_width: starting stage-1 width of the scored network (default: the seed
            topology's); at least the stage-1 heads.
        size_fractions: budget fraction of each member (default ``2**-(n-1-k)``: 1/4, 1/2, 1).
        out_dir: write ``asvit_<size>.py`` (``arch = dict(...)``, ``img_size``) per member,
            the arch at ``width_scale`` times the scored width.
        score_settings: as in :func:`reinforce_search`.
        width_scale: members are this many times wider than the networks scored (As-ViT: 4).
        head_classes: count a classification head of this many classes in ``budget_params``
            (As-ViT: 1000); 0 counts the backbone only.
        tie_break: ``'expressive'`` (default) or ``'reference'`` (As-ViT's ``argmin``), see
            :func:`_pick`; recorded in the log header when not the default.
        stop_at: stop after the first growth step whose member costs at least this much
            (As-ViT: 80M parameters; at least one step is taken, as there); ``None`` grows
            until no candidate fits the budget.

    Returns:
        :class:`GrowthOutcome`; in its trajectory (and in the log's records) ``arch`` is the
        member (``width_scale`` times wider) and ``scored`` the network the proxies scored.
    """
    if (budget_params is None) == (budget_flops is None):
        raise ValueError('give exactly one of budget_params and budget_flops, got '
                         f'budget_params={budget_params!r}, budget_flops={budget_flops!r}')
    kind = 'params' if budget_params is not None else 'flops'
    budget = float(budget_params if budget_params is not None else budget_flops)
    if not budget > 0:
        raise ValueError(f'budget_{kind} must be positive, got {budget!r}')
    for name, value, least in (('width_scale', width_scale, 1),
                               ('head_classes', head_classes, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f'{name} must be an integer >= {least}, got {value!r}')
    if head_classes and kind != 'params':
        raise ValueError(f'head_classes={head_classes} counts parameters; it needs '
                         'budget_params, not budget_flops')
    if tie_break not in TIE_BREAKS:
        raise ValueError(f'tie_break must be one of {TIE_BREAKS}, got {tie_break!r}')
    if stop_at is not None and not 0 < stop_at <= budget:
        raise ValueError(f'stop_at must be in (0, budget_{kind}={budget:g}], got {stop_at!r}')
    sizes = list(sizes)
    if not sizes:
        raise ValueError('sizes must name at least one family member')
    fractions = list(size_fractions) if size_fractions is not None else [
        2.0**-(len(sizes) - 1 - k) for k in range(len(sizes))]
    if len(fractions) != len(sizes) or any(not 0 < f <= 1 for f in fractions) or any(
            b < a for a, b in zip(fractions, fractions[1:])):
        raise ValueError(f'size_fractions must be {len(sizes)} increasing values in (0, 1], '
                         f'got {fractions!r}')
    width = init_width if init_width is not None else seed_topology['width']
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f'init_width must be a positive integer, got {width!r}')
    if score_fn is None:
        score_fn = proxy_score_fn(seed=seed, in_channels=in_channels)

    def build_arch(w: int, depths: Sequence[int]) -> Dict[str, Any]:
        arch = dict(seed_topology, width=w, depths=list(depths))
        spec = make_asvit_arch(arch['width'], arch['depths'], arch['heads'],
                               arch.get('mlp_ratios', 4.0), arch.get('tokenizer_kernel', 4),
                               arch.get('down_kernels', (2, 2, 2)),
                               arch.get('splits', (1, 1, 1, 1)), img_size)
        return spec.as_dict()

    costs: Dict[str, float] = {}

    def cost_of(arch: Dict[str, Any]) -> float:
        key = json.dumps(arch, sort_keys=True)
        if key not in costs:
            if kind == 'params':
                dim = AsViT.resolve_arch(arch, img_size).dims[-1]
                costs[key] = float(asvit_params(arch, in_channels, img_size)
                                   + _head_params(dim, head_classes))
            else:
                costs[key] = float(asvit_flops(arch, in_channels, img_size))
        return costs[key]

    header = dict(type='header', kind='growth', network=NETWORK_VERSION,
                  score_settings=dict(score_settings or {}), seed=seed, budget_kind=kind,
                  budget=budget,
                  seed_topology=dict(seed_topology), init_width=width, ratios=list(ratios),
                  img_size=img_size, in_channels=in_channels, width_scale=width_scale,
                  head_classes=head_classes, stop_at=stop_at, version=2)
    if tie_break != 'expressive':  # logs of the default rule keep their header (and replay)
        header['tie_break'] = tie_break
    depths = [1, 1, 1, 1]
    try:
        start = build_arch(width, depths)
        member = build_arch(width * width_scale, depths)
    except ValueError as e:
        raise ValueError(f'init_width={width}: {e}') from None
    if cost_of(member) > budget:
        raise ValueError(f'budget_{kind}={budget:g} is below the starting network\'s '
                         f'{cost_of(member):g} (width {member["width"]} = init_width {width} x '
                         f'width_scale {width_scale}, depth [1, 1, 1, 1])')
    log = _JsonLog(log_path, header, resume)
    logged = {(r['step'], r['stage'], r['ratio']): r for r in log.records
              if r.get('type') == 'candidate'}
    logger, scored = _logger(), 0
    trajectory = [dict(step=0, arch=member, cost=cost_of(member), scored=start)]
    if progress:
        from mmengine.utils import ProgressBar
    for step in range(1, max_steps + 1):
        if stop_at is not None and step > 1 and trajectory[-1]['cost'] >= stop_at:
            break
        widths: List[Tuple[float, int]] = []
        for ratio in ratios:
            w = int(round(width * (1 + ratio)))
            if not widths or widths[-1][1] != w:
                widths.append((ratio, w))
        cands = []
        for stage in range(4):
            new_depths = [d + (i == stage) for i, d in enumerate(depths)]
            for ratio, new_width in widths:
                try:
                    arch = build_arch(new_width, new_depths)
                    big = build_arch(new_width * width_scale, new_depths)
                except ValueError:  # e.g. a width below a stage's heads
                    continue
                cost = cost_of(big)
                if cost <= budget:
                    cands.append(dict(stage=stage, ratio=ratio, width=new_width,
                                      depths=new_depths, arch=big, scored=arch, cost=cost))
        to_score = sum((step, c['stage'], c['ratio']) not in logged for c in cands)
        bar = None
        if progress and to_score:
            logger.info(f'growth step {step}: scoring {to_score} of {len(cands)} candidates')
            bar = ProgressBar(to_score)  # candidates done, rate, elapsed and ETA of the step
        for c in cands:
            rec = logged.get((step, c['stage'], c['ratio']))
            if rec is not None:
                if rec['scored'] != c['scored']:
                    raise ValueError(f'{log_path}: step {step} candidate (stage {c["stage"]}, '
                                     f'ratio {c["ratio"]}) logged another arch; the log is '
                                     'from another run')
                c['ntk'], c['ld'] = float(rec['ntk']), float(rec['ld'])
                continue
            c['ntk'], c['ld'] = _scores(score_fn, c['scored'])
            scored += 1
            log.append(dict(type='candidate', step=step, stage=c['stage'], ratio=c['ratio'],
                            arch=c['arch'], scored=c['scored'], cost=c['cost'], ntk=c['ntk'],
                            ld=c['ld']))
            if bar is not None:
                bar.update()
        if bar is not None:
            print()
        if not cands:
            break
        best, rank_sum = _pick(cands, tie_break)
        chosen = cands[best]
        width, depths = chosen['width'], chosen['depths']
        trajectory.append(dict(step=step, arch=chosen['arch'], cost=chosen['cost'],
                               scored=chosen['scored']))
        if not any(r.get('type') == 'chosen' and r['step'] == step for r in log.records):
            log.append(dict(type='chosen', step=step, stage=chosen['stage'],
                            ratio=chosen['ratio'], arch=chosen['arch'], scored=chosen['scored'],
                            cost=chosen['cost'], rank_sum=rank_sum, num_candidates=len(cands)))
        logger.info(f'growth step {step}: stage {chosen["stage"] + 1} +1 block, width x'
                    f'{1 + chosen["ratio"]:.2f} -> width {chosen["width"]} (member '
                    f'{chosen["arch"]["width"]}), depths {chosen["depths"]}, {kind} '
                    f'{chosen["cost"]:.4g} / {budget:.4g}')

    family: Dict[str, Dict[str, Any]] = {}
    prev = -1
    if len(trajectory) < len(sizes):
        raise ValueError(f'budget_{kind}={budget:g} gives only {len(trajectory)} networks '
                         f'(start + growth steps), too few for {len(sizes)} distinct sizes '
                         f'{sizes}; raise the budget or ask for fewer sizes')
    for k, (size, frac) in enumerate(zip(sizes, fractions)):
        # the largest step under the fraction, leaving one later step per larger member
        fits = [i for i, t in enumerate(trajectory) if t['cost'] <= frac * budget]
        idx = max(min(max(fits, default=0), len(trajectory) - len(sizes) + k), prev + 1)
        family[size] = trajectory[idx]
        prev = idx
    files = {}
    if out_dir:
        for size, member in family.items():
            files[size] = write_arch_file(
                osp.join(out_dir, f'asvit_{size}.py'), member['arch'], img_size, header=[
                    f'As-ViT {size}: growth step {member["step"]}, {kind} '
                    f'{member["cost"]:.6g} (budget {budget:.6g}), seed {seed}',
                    f'genotype: {arch_to_genotype(member["arch"], grown=True)}',
                    f'log: {log_path}'])
    return GrowthOutcome(trajectory, family, files, kind, budget, scored)
