"""The bill before the run: estimated GPU-hours of a study's trials (``--dry-run``).

Per trial: training FLOPs = 2 x backbone MACs per sample (at the trial's input shape, the
project's GFLOPs count: MACs with attention) x training samples x epochs x 3 (forward and
backward: the backward pass costs about twice the forward), divided by a stated sustained GPU
throughput. The backbone only: heads, necks, data loading and evaluation are not counted, so
the bill is a lower bound (a detection head adds most). Training samples: the trial's
``train`` size, else the full training split of the registered real-data task
(:data:`TRAIN_SAMPLES`).
"""
from typing import Any, Dict, List, Sequence

# Full training splits of the real-data tasks (what their configs read).
TRAIN_SAMPLES = {
    'in1k': (1_281_167, 'ImageNet-1k train images'),
    'in1k_pit': (1_281_167, 'ImageNet-1k train images'),
    'coco': (117_266, 'COCO 2017 train images with annotations (mmdet filters empty ones)'),
    'k400': (240_436, 'Kinetics-400 train clips (the mmaction2 list; copies vary)'),
}
FWD_BWD = 3  # forward + backward ~ 3 x forward
DEFAULT_GPU_TFLOPS = 100.0  # sustained per GPU (e.g. an A100: 312 peak bf16 at ~1/3 use)


def trial_bill(trial: Any, gpu_tflops: float = DEFAULT_GPU_TFLOPS) -> Dict[str, Any]:
    """GFLOPs (MACs) per sample, samples, epochs, training FLOPs and GPU-hours of a trial."""
    from ..cost import get_complexity
    from ..engine.config import load_with_rule
    from .tasks import configure, get_task, input_shape
    spec = get_task(trial.task)
    opts = trial.opts
    cfg = load_with_rule(spec.config_path, trial.rule)
    size = {k: opts.get(k) for k in ('epochs', 'train', 'val', 'batch')}
    cfg = configure(cfg, spec, size, trial.seed, '/nonexistent', '/nonexistent')
    import mmvitscale.models  # noqa: F401  (registers the backbones)
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    backbone = MODELS.build(cfg.model.backbone)
    shape = input_shape(spec, cfg)
    macs = get_complexity(backbone, shape)['flops']
    samples, what = (opts['train'], f'first {opts["train"]} {spec.unit}') if opts.get('train') \
        else TRAIN_SAMPLES.get(trial.task, (None, 'unknown'))
    epochs = opts.get('epochs') or cfg.train_cfg['max_epochs']
    flops = 2 * macs * samples * epochs * FWD_BWD if samples else None
    return dict(trial=str(trial), gflops=macs / 1e9, input_shape=list(shape), samples=samples,
                samples_what=what, epochs=epochs, train_flops=flops,
                gpu_hours=flops / (gpu_tflops * 1e12) / 3600 if flops else None)


def bill_lines(trials: Sequence[Any], gpus_per_trial: int,
               gpu_tflops: float = DEFAULT_GPU_TFLOPS) -> List[str]:
    """The bill of the real-data trials of ``trials`` as lines (empty: none of them)."""
    from .tasks import get_task
    real = [t for t in trials if not get_task(t.task).offline]
    if not real:
        return []
    lines = [f'bill (estimate): training FLOPs = 2 x backbone MACs per sample x samples x '
             f'epochs x {FWD_BWD} (forward + backward), at {gpu_tflops:g} TFLOP/s sustained '
             'per GPU (--gpu-tflops); backbone only (heads, data loading and evaluation not '
             'counted: a lower bound)']
    total = 0.0
    done: Dict[Any, Dict[str, Any]] = {}  # seeds of one arm cost the same
    for trial in real:
        arm = (trial.task, trial.rule, trial.options)
        if arm not in done:
            done[arm] = trial_bill(trial, gpu_tflops)
        b = dict(done[arm], trial=str(trial))
        if b['gpu_hours'] is None:
            lines.append(f"  {b['trial']}: {b['gflops']:.2f} GMACs/sample at "
                         f"{b['input_shape']}; training samples unknown: no estimate")
            continue
        total += b['gpu_hours']
        wall = (f", {b['gpu_hours'] / gpus_per_trial:.1f} h on {gpus_per_trial} GPU(s)"
                if gpus_per_trial else '')
        lines.append(f"  {b['trial']}: {b['gflops']:.2f} GMACs/sample at {b['input_shape']} x "
                     f"{b['samples']:,} samples ({b['samples_what']}) x {b['epochs']} epochs = "
                     f"{b['train_flops']:.3g} FLOPs -> {b['gpu_hours']:.1f} GPU-hours{wall}")
    lines.append(f'  total: {total:.1f} GPU-hours over {len(real)} real-data trial(s)')
    return lines
