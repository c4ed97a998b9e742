"""One GPU check of the cost and search paths, written as one JSON file.

    python benchmarks/gpu_check.py --out work_dirs/gpu_check.json            # on a GPU
    python benchmarks/gpu_check.py --dry --out work_dirs/gpu_check_dry.json  # CPU, seconds

Sections (each records ``status`` ``ok`` / ``partial`` / ``skipped`` / ``error`` and a
``reason``; one failing section never stops the others):

* ``latency``: batch-1 and batch-32 latency of the DeiT-Ti family (DeiT-Ti / S / B presets) and
  of DeiT-Ti scaled by every rule file in ``configs/_base_/scaling`` on each backend: CUDA
  eager, ``torch.compile``, fp16 / bf16 eager and compiled, ONNX Runtime CUDA, TensorRT
  (onnxruntime's TensorRT provider). A backend that cannot run here is one row per model with
  ``status='skipped'`` and the reason (package or provider missing).
* ``proxies``: As-ViT's NTK condition and length distortion of its published seed topology at
  the reference settings (224 px, batch 16, 10 points, 1 init) on the GPU, against the
  network's own forward + backward measured in the same process.
* ``search``: a 20-step burst of the REINFORCE topology search at the reference proxy settings.
* ``latency_table``: a GPU latency table (eager, batch 1 and 32) of rule and seeded random
  variants of DeiT-Ti, and the held-out error of a latency predictor fitted on half of it.

A time budget (``--budget-s``, default 540 s) is shared by the sections, the latency section
taking at most 45% of it (``torch.compile`` backends last): work that would start after its
budget is recorded as skipped ("time budget spent"). ``--dry`` runs the same code on the CPU with
tiny sizes in seconds and writes the same schema; ``make test`` runs it.
"""
import argparse
import json
import os
import os.path as osp
import platform
import random
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

import mmvitscale  # noqa: F401  (shims first)
import torch

from mmvitscale.fileio import atomic_write, json_ready

SCHEMA = 'mmvitscale-gpu-check'
VERSION = 1
SECTIONS = ('latency', 'proxies', 'search', 'latency_table')
STATUSES = ('ok', 'partial', 'skipped', 'error')
# torch.compile last: each compilation takes tens of seconds, the section's budget stops them
GPU_BACKENDS = ('eager', 'eager-fp16', 'eager-bf16', 'onnxruntime', 'onnxruntime-trt', 'compile',
                'compile-bf16', 'compile-fp16')
LATENCY_SHARE = 0.45  # of the budget, at most, for the latency section (the others need ~3 min)
FAMILY = ('deit-tiny', 'deit-small', 'deit-base')
LATENCY_ROW_KEYS = ('model', 'backend', 'batch_size', 'status', 'reason', 'median_ms', 'p10_ms',
                    'min_ms', 'noise_pct', 'setup_s')
# the dry run: a 2-block width-32 ViT at 32 px stands in for DeiT-Ti
DRY_ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0)


class Budget:
    """Seconds left of the run's time budget (``parent``: never more than it has left)."""

    def __init__(self, seconds: float, parent: Optional['Budget'] = None) -> None:
        self.end = time.perf_counter() + seconds
        if parent is not None:
            self.end = min(self.end, parent.end)

    def left(self) -> float:
        return self.end - time.perf_counter()


def settings(dry: bool) -> Dict[str, Any]:
    """The sizes of a run: the GPU defaults or the dry run's tiny ones."""
    if dry:
        return dict(device='cpu', img_size=32, patch_size=8, arch=DRY_ARCH, family=('tiny', ),
                    max_models=3, batch_sizes=(1, 2), repeats=2, rounds=1, warmup_s=0.0,
                    compile_models=0, proxy_img=32, proxy_batch=4, proxy_points=3,
                    proxy_inits=1, proxy_rounds=1, search_steps=2, search_inits=1,
                    table_random=4, table_batch_sizes=(1, ))
    return dict(device='cuda', img_size=224, patch_size=16, arch='deit-tiny', family=FAMILY,
                max_models=None, batch_sizes=(1, 32), repeats=20, rounds=3, warmup_s=0.5,
                compile_models=2, proxy_img=224, proxy_batch=16, proxy_points=10, proxy_inits=1,
                proxy_rounds=3, search_steps=20, search_inits=5, table_random=24,
                table_batch_sizes=(1, 32))


def _section(fn: Callable[..., Dict[str, Any]], *args: Any) -> Dict[str, Any]:
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as err:  # noqa: BLE001 - recorded, the other sections still run
        out = dict(status='error', reason=f'{type(err).__name__}: {err}',
                   traceback=traceback.format_exc(limit=8))
    out.setdefault('reason', None)
    out['wall_s'] = time.perf_counter() - t0
    return out


def _models(cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    """(name, registry config) of the DeiT-Ti family and its rule variants."""
    from mmvitscale.experiments.device_measure import MeasureSpec, plan_archs
    base = dict(type='mmvitscale.ScaledViT', img_size=cfg['img_size'],
                patch_size=cfg['patch_size'])
    if cfg['family'] == ('tiny', ):
        out = [dict(name='tiny', cfg=dict(base, arch=cfg['arch']))]
    else:
        out = [dict(name=n, cfg=dict(base, arch=n)) for n in cfg['family']]
    spec = MeasureSpec(num_random=0, arch=cfg['arch'], img_size=cfg['img_size'],
                       patch_size=cfg['patch_size'])
    for label, rule in plan_archs(spec):
        if rule:
            out.append(dict(name=f'{label}', cfg=dict(base, arch=cfg['arch'], scaling=rule)))
    return out[:cfg['max_models']]


def _skip_reason(backend: str, device: str) -> Optional[str]:
    from mmvitscale.cost.backends import check_backend
    try:
        check_backend(backend, device)
    except ValueError as err:
        return str(err)
    return None


def run_latency(cfg: Dict[str, Any], budget: Budget) -> Dict[str, Any]:
    """Latency rows of every (model, backend, batch size); interleaved per backend and batch."""
    from mmvitscale.cost.backends import (BackendError, build_model, make_runner,
                                          measure_interleaved)
    models = _models(cfg)
    rows: List[Dict[str, Any]] = []
    for backend in GPU_BACKENDS:
        reason = _skip_reason(backend, cfg['device'])
        use = models[:cfg['compile_models']] if 'compile' in backend else models
        if reason is None and not use:
            reason = 'dry run: torch.compile left out (minutes of compilation)'
        for bs in cfg['batch_sizes']:
            if reason is None and budget.left() < (90 if 'compile' in backend else 20):
                reason = 'time budget spent'  # a compile takes tens of seconds per model
            if reason is not None:
                rows += [dict(model=m['name'], backend=backend, batch_size=bs,
                              status='skipped', reason=reason) for m in models]
                continue
            prepared, runners = [], []
            for m in use:
                model = build_model(m['cfg'])
                shape = (3, *model.arch_spec.img_size)
                s0 = time.perf_counter()
                try:
                    run, sync, info = make_runner(model, shape, backend, bs, cfg['device'])
                except (BackendError, RuntimeError) as err:
                    rows.append(dict(model=m['name'], backend=backend, batch_size=bs,
                                     status='error', reason=str(err)[:500]))
                    continue
                prepared.append((m['name'], time.perf_counter() - s0, info))
                runners.append((run, sync))
            if runners:
                results = measure_interleaved(runners, cfg['rounds'], cfg['repeats'],
                                              cfg['warmup_s'])
                for (name, setup_s, info), res in zip(prepared, results):
                    rows.append(dict(model=name, backend=backend, batch_size=bs, status='ok',
                                     reason=None, median_ms=res['median_ms'],
                                     p10_ms=res['p10_ms'], min_ms=res['min_ms'],
                                     noise_pct=res['noise_pct'], setup_s=setup_s, **info))
            rows += [dict(model=m['name'], backend=backend, batch_size=bs, status='skipped',
                          reason='torch.compile: only the first '
                                 f'{cfg["compile_models"]} models (compile time)')
                     for m in models[len(use):]]
            del runners, prepared
            if cfg['device'].startswith('cuda'):
                torch.cuda.empty_cache()
    ok = sum(r['status'] == 'ok' for r in rows)
    return dict(status='ok' if ok and all(r['status'] != 'error' for r in rows) else
                ('partial' if ok else 'error'), models=[m['name'] for m in models], rows=rows)


def run_proxies(cfg: Dict[str, Any], budget: Budget) -> Dict[str, Any]:
    """The two proxies of As-ViT's seed topology against its forward + backward."""
    from mmvitscale.models import AsViT
    from mmvitscale.search.proxies import proxy_timing
    from mmvitscale.search.topology import PUBLISHED_SEED, genotype_to_arch
    if budget.left() < 30:
        return dict(status='skipped', reason='time budget spent')
    arch = genotype_to_arch(PUBLISHED_SEED)
    dev = cfg['device']

    def build() -> torch.nn.Module:
        model = AsViT(arch, img_size=cfg['proxy_img'], out_type='avg_featmap',
                      final_norm=False)
        model.init_weights()
        return model.to(dev)

    res = proxy_timing(build, (3, cfg['proxy_img'], cfg['proxy_img']), cfg['proxy_batch'],
                       cfg['proxy_points'], cfg['proxy_inits'], rounds=cfg['proxy_rounds'])
    return dict(status='ok', genotype=PUBLISHED_SEED, img_size=cfg['proxy_img'],
                batch_size=cfg['proxy_batch'], num_points=cfg['proxy_points'],
                num_inits=cfg['proxy_inits'], **res)


def run_search(cfg: Dict[str, Any], budget: Budget, work_dir: str) -> Dict[str, Any]:
    """A short REINFORCE burst at the reference proxy settings (the dry run: tiny ones)."""
    from mmvitscale.search.topology import (REFERENCE_PROXY_SETTINGS, arch_to_genotype,
                                            proxy_score_fn, reinforce_search)
    if budget.left() < 60:
        return dict(status='skipped', reason='time budget spent')
    proxy = dict(REFERENCE_PROXY_SETTINGS, img_size=cfg['proxy_img'],
                 batch_size=cfg['proxy_batch'], num_inits=cfg['search_inits'],
                 num_points=cfg['proxy_points'])
    log = osp.join(work_dir, 'gpu_check_search.jsonl')
    if osp.exists(log):
        os.remove(log)
    t0 = time.perf_counter()
    out = reinforce_search(cfg['search_steps'], 0, proxy_score_fn(device=cfg['device'], **proxy),
                           log, resume=False, progress=False, score_settings=proxy)
    wall = time.perf_counter() - t0
    return dict(status='ok', steps=cfg['search_steps'], proxy_settings=proxy, wall_s_steps=wall,
                s_per_step=wall / max(cfg['search_steps'], 1),
                genotype=arch_to_genotype(out.topology), scored=out.num_scored)


def run_latency_table(cfg: Dict[str, Any], budget: Budget, work_dir: str) -> Dict[str, Any]:
    """A GPU latency table (eager) and a predictor's held-out error on half of its archs."""
    from mmvitscale.cost.backends import build_model, make_runner, measure_interleaved
    from mmvitscale.cost.calibration import within
    from mmvitscale.cost.latency_table import append_rows, fingerprint, make_row
    from mmvitscale.cost.predictor import make_predictor, mape
    from mmvitscale.experiments.device_measure import MeasureSpec, plan_archs
    if budget.left() < 30:
        return dict(status='skipped', reason='time budget spent')
    spec = MeasureSpec(num_random=cfg['table_random'], arch=cfg['arch'],
                       img_size=cfg['img_size'], patch_size=cfg['patch_size'])
    archs = plan_archs(spec)
    path = osp.join(work_dir, 'gpu_latency_table.jsonl')
    if osp.exists(path):
        os.remove(path)
    fp = fingerprint(cfg['device'], 'eager')
    per_batch: Dict[str, Any] = {}
    for bs in cfg['table_batch_sizes']:
        if budget.left() < 15:
            per_batch[str(bs)] = dict(status='skipped', reason='time budget spent')
            continue
        runners, specs = [], []
        for label, rule in archs:
            model = build_model(dict(type='mmvitscale.ScaledViT', arch=cfg['arch'],
                                     img_size=cfg['img_size'], patch_size=cfg['patch_size'],
                                     scaling=rule))
            arch = model.arch_spec.as_dict()
            shape = (3, *arch['img_size'])
            run, sync, _ = make_runner(model, shape, 'eager', bs, cfg['device'])
            runners.append((run, sync))
            specs.append((label, arch, shape))
        results = measure_interleaved(runners, cfg['rounds'], cfg['repeats'], cfg['warmup_s'])
        rows = [make_row(fp, 'vit', arch, shape, bs, res, min_ms=res['min_ms'], label=label,
                         source='gpu_check') for (label, arch, shape), res in zip(specs, results)]
        append_rows(path, rows)
        del runners
        order = list(range(len(rows)))
        random.Random(0).shuffle(order)
        half = max(2, len(order) // 2)
        train, test = order[:half], order[half:] or order[:1]
        fits = {}
        for kind in ('analytic', 'kernel'):
            pred = make_predictor(kind).fit([specs[i][1] for i in train],
                                            [rows[i]['median_ms'] for i in train],
                                            batch_size=bs)
            p = pred.predict_many([specs[i][1] for i in test], batch_size=bs)
            y = [rows[i]['median_ms'] for i in test]
            fits[kind] = dict(held_out_mape=mape(p, y), within10=within(p, y))
        per_batch[str(bs)] = dict(status='ok', archs=len(rows), train=len(train),
                                  test=len(test), predictor=fits,
                                  noise_pct_median=sorted(r['noise_pct'] for r in rows)[
                                      len(rows) // 2])
    status = 'ok' if all(v['status'] == 'ok' for v in per_batch.values()) else 'partial'
    return dict(status=status, table=path, fingerprint=fp, batch_sizes=per_batch)


def environment(device: str) -> Dict[str, Any]:
    """What ran: torch / CUDA / onnxruntime / TensorRT versions and the device name."""
    from mmvitscale.cost.latency import device_name
    env: Dict[str, Any] = dict(python=platform.python_version(), torch=torch.__version__,
                               cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                               device_name=device_name(device), host=platform.node())
    for pkg in ('onnxruntime', 'tensorrt', 'torch_tensorrt'):
        try:
            mod = __import__(pkg)
            env[pkg] = getattr(mod, '__version__', 'unknown')
        except Exception as err:  # noqa: BLE001 - absent or broken: say which
            env[pkg] = f'unavailable ({type(err).__name__}: {err})'[:200]
    try:
        import onnxruntime as ort
        env['onnxruntime_providers'] = ort.get_available_providers()
    except Exception:  # noqa: BLE001
        env['onnxruntime_providers'] = []
    try:
        env['loadavg'] = list(os.getloadavg())
    except OSError:
        env['loadavg'] = None
    return env


def run(dry: bool = False, out: str = 'work_dirs/gpu_check.json', budget_s: float = 540.0,
        sections: Sequence[str] = SECTIONS) -> Dict[str, Any]:
    """Run the chosen sections and write the JSON report to ``out``; returns the report."""
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f'--sections: unknown {bad} (choose from {", ".join(SECTIONS)})')
    if not budget_s > 0:
        raise ValueError(f'--budget-s must be > 0, got {budget_s!r}')
    cfg = settings(dry)
    if cfg['device'] == 'cuda' and not torch.cuda.is_available():
        raise ValueError('no CUDA device here: run on a GPU, or pass --dry for the CPU check')
    work_dir = osp.dirname(osp.abspath(out))
    os.makedirs(work_dir, exist_ok=True)
    budget, t0 = Budget(budget_s), time.perf_counter()
    report: Dict[str, Any] = dict(schema=SCHEMA, version=VERSION, dry=dry, device=cfg['device'],
                                  budget_s=budget_s, settings=cfg,
                                  environment=environment(cfg['device']), sections={})
    runners = dict(latency=lambda: run_latency(cfg, Budget(LATENCY_SHARE * budget_s, budget)),
                   proxies=lambda: run_proxies(cfg, budget),
                   search=lambda: run_search(cfg, budget, work_dir),
                   latency_table=lambda: run_latency_table(cfg, budget, work_dir))
    for name in SECTIONS:
        if name not in sections:
            report['sections'][name] = dict(status='skipped', reason='not asked for '
                                            '(--sections)', wall_s=0.0)
            continue
        print(f'[gpu_check] {name} ... ({budget.left():.0f} s of the budget left)', flush=True)
        report['sections'][name] = _section(runners[name])
        sec = report['sections'][name]
        print(f'[gpu_check] {name}: {sec["status"]} in {sec["wall_s"]:.1f} s'
              + (f' ({sec["reason"]})' if sec['reason'] else ''), flush=True)
        atomic_write(out, json.dumps(json_ready(report), indent=1) + '\n')  # partial results
    report['wall_s'] = time.perf_counter() - t0
    atomic_write(out, json.dumps(json_ready(report), indent=1) + '\n')
    return report


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='work_dirs/gpu_check.json', help='JSON report path')
    parser.add_argument('--dry', action='store_true',
                        help='CPU, tiny sizes, seconds (also DRY=1 in the environment)')
    parser.add_argument('--budget-s', type=float, default=540.0,
                        help='seconds all sections share (default 540)')
    parser.add_argument('--sections', nargs='+', default=list(SECTIONS), metavar='SECTION',
                        help=f'any of {" ".join(SECTIONS)} (default all)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    dry = args.dry or os.environ.get('DRY', '') not in ('', '0')
    try:
        report = run(dry, args.out, args.budget_s, args.sections)
    except ValueError as err:
        print(f'gpu_check: error: {err}', file=sys.stderr)
        return 2
    states = {k: v['status'] for k, v in report['sections'].items()}
    print(f'[gpu_check] wrote {args.out} in {report["wall_s"]:.1f} s: {states}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
