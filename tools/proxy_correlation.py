"""Does the training-free proxy predict accuracy? (issue 6)

    python tools/proxy_correlation.py [--num-archs 30] [--train 4000] [--val 1000]
        [--epochs 2] [--train-seeds 0 1 2] [--out-dir work_dirs/proxy_correlation] [--seed 0]

Samples ``--num-archs`` distinct architectures of the scaling space around the Fashion-MNIST
ViT base of ``configs/cls/scaled_vit_fmnist.py`` (embed 64, 6 layers, 2 heads, patch 4, 32 px;
resolution kept at 32), trains each briefly with mmengine's stock Runner once per training seed
(the config loaded under a per-architecture rule file with
:func:`mmvitscale.engine.config.load_with_rule`, on a subset, 1 thread), scores it with the As-ViT
proxies (NTK condition number, lower is better; length distortion, higher is better; on a
backbone without the final LayerNorm) and reports Kendall's tau of each proxy and of their
combined rank (As-ViT style rank sum) against the seed-mean top-1 accuracy, with a 95%
bootstrap interval over architectures, the tau per training seed, and how alike two training
seeds rank the architectures (the ceiling a proxy can reach at this budget).

Resumable: each finished proxy score and training is appended to ``runs.jsonl`` in
``--out-dir``; a rerun skips what is already there (more seeds or archs train only the new).
Writes ``proxy_correlation.json``, ``.md`` and ``.png`` (atomically) to ``--out-dir``. The
logic lives in :mod:`mmvitscale.experiments.proxy_correlation`.
"""
import argparse
import os.path as osp
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mmvitscale  # noqa: F401  (stack shims + registries, before any host import)
import torch

from mmvitscale.experiments.console import Eta, Stages
from mmvitscale.experiments.console import clock as _clock
from mmvitscale.experiments.console import loadavg_text as _loadavg
from mmvitscale.experiments.proxy_correlation import (LOG_NAME, REPORT_STEM, ProxyFn, TrainFn,
                                                      build_report, check_spec,
                                                      ensure_study_data, fmt_tau, measure_archs,
                                                      proxy_arch, sample_rules, spec_from_flags,
                                                      study_meta, train_arch, write_report)
from mmvitscale.experiments.tasks import ROOT
from mmvitscale.errors import InputError, folder_arg


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--num-archs', type=int, default=30, help='architectures to sample')
    parser.add_argument('--train', type=int, default=4000, help='training images (first N)')
    parser.add_argument('--val', type=int, default=1000, help='test images (first N)')
    parser.add_argument('--epochs', type=int, default=2, help='training epochs per arch')
    parser.add_argument('--batch', type=int, default=64, help='training batch size')
    parser.add_argument('--out-dir', default='work_dirs/proxy_correlation', type=folder_arg,
                        help='report folder')
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data'), type=folder_arg,
                        help='folder holding fashion_mnist/')
    parser.add_argument('--seed', type=int, default=0,
                        help='sampling and proxy seed (which architectures; proxy init)')
    parser.add_argument('--train-seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='every architecture is trained once per seed (same seeds for all; '
                        'k >= 2 for the seed-to-seed ceiling and intervals)')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--workers', type=int, default=0, help='data loader workers')
    parser.add_argument('--proxy-batch', type=int, default=8, help='NTK batch size')
    parser.add_argument('--proxy-inits', type=int, default=1, help='proxy initialisations')
    parser.add_argument('--proxy-points', type=int, default=6,
                        help='length-distortion circle points')
    args = parser.parse_args(argv)
    try:
        check_spec(spec_from_flags(args))
    except InputError as err:  # every field is its flag with '-' for '_'
        flags = ' / '.join('--' + n.replace('_', '-') for n in err.names)
        parser.error(f'{flags} {err.detail}')
    return args


def main(argv: Optional[Sequence[str]] = None, train_fn: TrainFn = train_arch,
         proxy_fn: ProxyFn = proxy_arch, stages: Optional[Stages] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    spec, out_dir = spec_from_flags(args), osp.abspath(args.out_dir)
    torch.set_num_threads(spec.threads)
    stages = stages or Stages()
    say = stages.console.print

    def stamp() -> str:
        return f'[{_clock(stages.elapsed())}]'

    if train_fn is train_arch:
        with stages.stage(f'data under {spec.data_root}'):
            ensure_study_data(spec)
    rules = sample_rules(spec.num_archs, spec.seed)
    if len(rules) < spec.num_archs:
        say(f'only {len(rules)} distinct architectures in the space')

    clock = Eta([])

    def start(todo: List[Tuple[str, int]]) -> None:
        nonlocal clock
        say(f'{stamp()} {len(rules)} architectures x ({len(spec.train_seeds)} training seed(s) '
            f'+ proxies): {len(todo)} of {len(rules) * (len(spec.train_seeds) + 1)} to run')
        clock = Eta(todo)  # a training is expected to take what that arch's other seeds took

    def progress(kind: str, i: int, seed: Optional[int], rec: Dict[str, Any]) -> None:
        a = rec['arch']
        arch = (f'arch {i + 1}/{len(rules)} d{a["depth"]} w{a["width"]} h{a["heads"]} '
                f'mlp{a["mlp_ratio"]:g} p{a["patch_size"]}')
        what = (f'kappa {rec["ntk_condition"]:.3g}, length {rec["length_distortion"]:.3g}'
                if kind == 'proxy' else f'seed {seed}: top-1 {rec["accuracy"]:.2f}%')
        count, times = clock.finished((kind, i), rec['wall_s'])
        say(f'{stamp()} {count} {arch} {what} ({rec["wall_s"]:.1f}s); {times}')

    records, skipped = measure_archs(rules, spec, out_dir, train_fn, proxy_fn, progress, start)
    if skipped:
        say(f'{stamp()} resumed: {skipped} training(s) / proxy score(s) from '
            f'{osp.join(out_dir, LOG_NAME)}')
    command = ' '.join(['python tools/proxy_correlation.py',
                        *(argv if argv is not None else sys.argv[1:])])
    meta = study_meta(spec, len(records), command, stages.elapsed(), skipped,
                      getattr(stages, 'loadavg_start', None))
    report = build_report(records, meta)
    write_report(report, out_dir)
    for key, c in report['correlation'].items():
        say(f'{stamp()} Kendall tau {key:18s} {fmt_tau(c["tau"])} (95% '
            f'{fmt_tau(c["ci95"][0])} to {fmt_tau(c["ci95"][1])}, p {c["p"]:.3g}, n {c["n"]}; '
            f'per seed {", ".join(fmt_tau(t) for t in c["per_seed"])})')
    agree = report['seed_agreement']
    if agree['pairs']:
        say(f'{stamp()} seed-to-seed tau of top-1 (ceiling): {fmt_tau(agree["mean_tau"])} mean '
            f'over {len(agree["pairs"])} pair(s)')
    say(f'{stamp()} goal (combined tau >= {report["goal"]["tau"]}): {report["goal"]["verdict"]}')
    for group, c in report['within_patch_size'].items():
        say(f'{stamp()} within {group} (n {c["combined"]["n"]}): tau ntk '
            f'{fmt_tau(c["ntk_condition"]["tau"])}, length '
            f'{fmt_tau(c["length_distortion"]["tau"])}, combined {fmt_tau(c["combined"]["tau"])} '
            f'(95% {fmt_tau(c["combined"]["ci95"][0])} to {fmt_tau(c["combined"]["ci95"][1])})')
    say(f'{stamp()} wrote {out_dir}/{REPORT_STEM}.json, .md, .png')
    return report


if __name__ == '__main__':
    _stages = Stages()
    _stages.loadavg_start = _loadavg()
    main(stages=_stages)
