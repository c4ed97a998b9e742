"""Levers of the latency protocol, each measured: two back-to-back runs per lever, agreement.

    python benchmarks/latency_protocol.py [--archs 12] [--levers base short-rounds ...]
        [--out-dir work_dirs/benchmarks]

Each lever measures the same seeded scaled DeiT-Ti architectures (eager, 1 thread, batch 1)
plus a fixed 512^3 float32 GEMM (the host floor, :func:`mmvitscale.cost.protocol.gemm_runner`)
twice, each run in a fresh interpreter, back to back, with the protocol of
:func:`mmvitscale.cost.backends.measure_interleaved`. For every row statistic (median, p10, min)
it reports the per-architecture run-to-run difference (median and p90 over the archs) beside the
GEMM's own, the measuring thread's CPU share and the load average before and after. Writes
``latency_protocol.json`` and ``latency_protocol.md``. Run it under ``flock -x`` on a shared
machine; it takes about 4 minutes.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Any, Dict, List

LEVERS: Dict[str, Dict[str, Any]] = {
    'base': dict(rounds=3, repeats=5, warmup=0.3, cpus='auto', clock='wall'),
    'short-rounds': dict(rounds=15, repeats=1, warmup=0.3, cpus='auto', clock='wall'),
    'long-warmup': dict(rounds=3, repeats=5, warmup=2.0, cpus='auto', clock='wall'),
    'last-core': dict(rounds=3, repeats=5, warmup=0.3, cpus='last', clock='wall'),
    'unpinned': dict(rounds=3, repeats=5, warmup=0.3, cpus=None, clock='wall'),
    'thread-clock': dict(rounds=3, repeats=5, warmup=0.3, cpus='auto', clock='thread'),
}


def child(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """One run in this process: measure the archs and the GEMM, return the statistics."""
    import mmvitscale  # noqa: F401
    from mmvitscale.cost.backends import build_model, make_runner, measure_interleaved, pinned
    from mmvitscale.cost.evaluation import sample_archs
    from mmvitscale.cost.protocol import gemm_runner, loadavg
    from mmvitscale.families import get_family
    archs = sample_archs(cfg['archs'], 0, 0, seed=0)
    before = loadavg()
    cpus = cfg['cpus']
    if cpus == 'last':
        cpus = [sorted(os.sched_getaffinity(0))[-1]]
    with pinned(1, cpus) as pin:
        runners = []
        for a in archs:
            fam = get_family(a['family'])
            model = build_model(fam.backbone_cfg(fam.default_arch, 224, rule=a['rule']))
            run, sync, _ = make_runner(model, (3, *a['arch']['img_size']), 'eager')
            runners.append((run, sync))
        runners.append(gemm_runner())
        res = measure_interleaved(runners, cfg['rounds'], cfg['repeats'], cfg['warmup'],
                                  clock=cfg['clock'])
    keys = ('median_ms', 'p10_ms', 'min_ms', 'cpu_share', 'noise_pct')
    return dict(rows=[{k: r[k] for k in keys} for r in res], cpus=pin['cpus'],
                loadavg=dict(before=list(before), after=list(loadavg())))


def run_lever(name: str, cfg: Dict[str, Any]) -> Dict[str, Any]:
    from mmvitscale.cost.protocol import STATS, agreement
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, __file__, '--child', json.dumps(cfg)],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out: Dict[str, Any] = dict(lever=name, config=cfg, loadavg=[r['loadavg'] for r in runs],
                               cpus=runs[0]['cpus'])
    a, b = runs[0]['rows'], runs[1]['rows']
    for stat in STATS:
        out[stat] = agreement([r[stat] for r in a[:-1]], [r[stat] for r in b[:-1]])
        out[f'gemm_{stat}'] = agreement([a[-1][stat]], [b[-1][stat]])['median_pct']
    shares = sorted(r['cpu_share'] for run in runs for r in run['rows'])
    out['cpu_share_median'] = shares[len(shares) // 2]
    out['noise_pct_median'] = sorted(r['noise_pct'] for r in a[:-1])[len(a) // 2]
    out['latency_ms_range'] = [min(r['median_ms'] for r in a[:-1]),
                               max(r['median_ms'] for r in a[:-1])]
    return out


def to_markdown(rows: List[Dict[str, Any]]) -> str:
    lines = ['| lever | run-to-run median % (p90): median | p10 | min | GEMM median / p10 / '
             'min % | thread CPU share | load before -> after |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        cells = [f"{r[s]['median_pct']:.1f} ({r[s]['p90_pct']:.1f})"
                 for s in ('median_ms', 'p10_ms', 'min_ms')]
        load = ' / '.join(f"{lv['before'][0]:.2f} -> {lv['after'][0]:.2f}" for lv in r['loadavg'])
        lines.append(f"| {r['lever']} | " + ' | '.join(cells) + ' | '
                     f"{r['gemm_median_ms']:.1f} / {r['gemm_p10_ms']:.1f} / "
                     f"{r['gemm_min_ms']:.1f} | {r['cpu_share_median']:.2f} | {load} |")
    return '\n'.join(lines) + '\n'


def main(argv=None) -> List[Dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--archs', type=int, default=12, help='scaled DeiT-Ti archs (>= 4)')
    p.add_argument('--levers', nargs='+', choices=sorted(LEVERS), default=list(LEVERS))
    p.add_argument('--out-dir', default='work_dirs/benchmarks')
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return []
    if args.archs < 4:
        p.error(f'--archs: must be >= 4, got {args.archs}')
    from mmvitscale.fileio import atomic_write
    rows = []
    for name in args.levers:
        rows.append(run_lever(name, dict(LEVERS[name], archs=args.archs)))
        r = rows[-1]
        print(f"{name}: run to run median {r['median_ms']['median_pct']:.1f}% / p10 "
              f"{r['p10_ms']['median_pct']:.1f}% / min {r['min_ms']['median_pct']:.1f}%; "
              f"GEMM {r['gemm_median_ms']:.1f}%; CPU share {r['cpu_share_median']:.2f}",
              flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    atomic_write(osp.join(args.out_dir, 'latency_protocol.json'), json.dumps(rows, indent=1))
    md = to_markdown(rows)
    atomic_write(osp.join(args.out_dir, 'latency_protocol.md'), md)
    print(md)
    return rows


if __name__ == '__main__':
    main()
