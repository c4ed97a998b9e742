"""Training throughput of a trial: mmengine's Runner against a raw PyTorch loop.

Both train the same model (the task config under a rule), batch and torch threads, for the
same number of iterations after warm-up, in the same process. The raw loop feeds pre-made
tensors to forward + loss + backward + optimizer step; the Runner trains on the task's data
through the config, configured as a trial (:func:`~mmvitscale.experiments.tasks.configure`).
Raw steps and Runner iterations alternate one by one, so machine load hits both alike.
"""
import contextlib
import io
import os
import platform
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

from .tasks import configure, ensure_data, get_task, trial_size

Progress = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


# data='mmpretrain': the loading path before InMemoryFashionMNIST (per-item pipeline, lists)
MMPRETRAIN_DATA = dict(collate_fn=dict(type='pseudo_collate'), dataset=dict(type='FashionMNIST'))
DATA_CHOICES = ('config', 'mmpretrain')


def _build_cfg(task: str, rule: str, batch: int, n_iters: int, work_dir: str,
               data_root: str, seed: int, data: str = 'config'):
    from ..engine.config import load_with_rule
    spec = get_task(task)
    size = trial_size(spec, epochs=1, train=batch * n_iters, batch=batch)
    ensure_data(spec, data_root, size)
    cfg = load_with_rule(spec.config_path, rule)
    cfg = configure(cfg, spec, size, seed, work_dir, data_root)
    if data == 'mmpretrain':
        cfg.merge_from_dict(dict(train_dataloader=MMPRETRAIN_DATA))
    return cfg


def make_raw_step(model: Any, batch: int, optim_cfg: Dict[str, Any], input_shape: tuple,
                  num_classes: int, clip_grad: Optional[Dict[str, Any]] = None
                  ) -> Callable[[], None]:
    """One raw training step of ``model`` on pre-made tensors, as a function.

    A step is the classifier's forward, its head's loss module, backward, gradient-norm
    clipping when the config clips (``clip_grad=dict(max_norm=...)``: part of the recipe, not
    of the framework) and an AdamW step with the config's learning rate and weight decay (no
    data loading, no hooks).
    """
    import torch
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=optim_cfg.get('lr', 1e-3),
                            weight_decay=optim_cfg.get('weight_decay', 0.01))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, ) + tuple(input_shape), generator=gen)
    y = torch.randint(0, num_classes, (batch, ), generator=gen)
    loss_module = model.head.loss_module

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        score = model.head(model.extract_feat(x))
        loss = loss_module(score, y, avg_factor=score.size(0))
        loss.backward()
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), **clip_grad)
        opt.step()

    return step


class _Interleave:
    """Runner hook state: after each Runner iteration, one raw step; both timed apart.

    A Runner iteration is timed from the end of the previous raw step to this hook (the
    lowest priority, so every other hook's work and the data loading are inside it).
    """

    def __init__(self, warmup: int, iters: int, raw_step: Callable[[], None]) -> None:
        self.warmup, self.iters, self.raw_step = warmup, iters, raw_step
        self.runner_s: List[float] = []
        self.raw_s: List[float] = []
        self.mark: Optional[float] = None

    def make(self) -> Any:
        from mmengine.hooks import Hook
        state = self

        class InterleaveHook(Hook):
            priority = 'LOWEST'

            def before_train(self, runner) -> None:
                state.mark = time.perf_counter()

            def after_train_iter(self, runner, batch_idx, data_batch=None,
                                 outputs=None) -> None:
                t0 = time.perf_counter()
                state.raw_step()
                t1 = time.perf_counter()
                if runner.iter + 1 > state.warmup:  # the loop counts after this hook
                    state.runner_s.append(t0 - state.mark)
                    state.raw_s.append(t1 - t0)
                state.mark = time.perf_counter()

        return InterleaveHook()


def runner_round(task: str, rule: str, batch: int, warmup: int, iters: int,
                 raw_step: Callable[[], None], work_dir: str, data_root: str,
                 seed: int = 0, data: str = 'config') -> Dict[str, Any]:
    """Per-iteration seconds of ``iters`` Runner iterations and as many raw steps, interleaved.

    The config is the task's under ``rule``, configured as a trial of one epoch of exactly
    ``warmup + iters`` batches; data loading of the timed iterations is included.
    """
    from .runner import train_and_test
    cfg = _build_cfg(task, rule, batch, warmup + iters, work_dir, data_root, seed, data)
    state = _Interleave(warmup, iters, raw_step)
    with contextlib.redirect_stdout(io.StringIO()):  # a benchmark: no checkpoint, no test
        done = train_and_test(cfg, resume=False, checkpoints=False, test=False,
                              hooks=[(state.make(), 'LOWEST')])
    if len(state.runner_s) < iters:
        raise RuntimeError(f'the Runner ran {done.runner.iter} iterations, fewer than '
                           f'warmup + iters = {warmup + iters}')
    return dict(runner_s=state.runner_s, raw_s=state.raw_s, build_s=done.build_s,
                loader_workers=cfg.train_dataloader.num_workers,
                dataset=str(cfg.train_dataloader.dataset.get('type')))


def benchmark_training(task: str = 'cls', rule: Optional[str] = None,
                       batch: Optional[int] = None,
                       iters: int = 40, warmup: int = 5, rounds: int = 3, threads: int = 1,
                       data_root: Optional[str] = None, seed: int = 0, data: str = 'config',
                       progress: Progress = _quiet) -> Dict[str, Any]:
    """Runner vs raw img/s of ``task`` under ``rule``, interleaved over ``rounds``.

    ``batch`` defaults to the task's trial batch.
    Each Runner iteration is followed by one raw step on a separate copy of the model, so
    load from other processes falls on both alike. Returns per-round img/s of each (mean
    over rounds), ``ratio`` (median of the per-round runner/raw img/s ratios),
    ``ratio_median_iter`` (median raw step time over median Runner iteration time: robust
    to bursts of load), and the machine (load average, torch version, threads).
    ``data='mmpretrain'`` trains on mmpretrain's ``FashionMNIST`` with ``pseudo_collate`` (the
    path before :class:`~mmvitscale.datasets.memory.InMemoryFashionMNIST`) instead of the
    config's dataset. ``rule`` defaults to the baseline shape
    ``configs/_base_/scaling/deit_tiny_shape.py``.
    """
    import torch
    from mmengine.registry import MODELS

    from .tasks import SCALING_DIR, input_shape
    spec = get_task(task)
    if batch is None:  # the batch a trial of the task trains with
        batch = trial_size(spec)['batch'] or 32
    for name, value in dict(batch=batch, iters=iters, rounds=rounds, threads=threads).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    if data not in DATA_CHOICES:
        raise ValueError(f'data must be one of {DATA_CHOICES}, got {data!r}')
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f'warmup must be an integer >= 0, got {warmup!r}')
    rule = rule or os.path.join(SCALING_DIR, 'deit_tiny_shape.py')
    if not os.path.isfile(rule):
        raise ValueError(f'rule file not found: {rule}')
    if spec.kind != 'cls':
        raise ValueError(f'task must be a classification task, got {task!r} ({spec.kind})')
    torch.set_num_threads(threads)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix='mmvitscale_bench_') as tmp:
        data_root = data_root or os.path.join(tmp, 'data')
        cfg = _build_cfg(task, rule, batch, warmup + iters, os.path.join(tmp, 'probe'),
                         data_root, seed)
        import mmvitscale.models  # noqa: F401  (registers ScaledViT)
        from mmengine.registry import init_default_scope
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
        torch.manual_seed(seed)
        model = MODELS.build(cfg.model)
        shape = input_shape(spec, cfg)
        optim = dict(cfg.optim_wrapper.optimizer)
        num_classes = cfg.model.head.num_classes
        clip_grad = cfg.optim_wrapper.get('clip_grad')
        clip_grad = dict(clip_grad) if clip_grad else None
        raw_step = make_raw_step(model, batch, optim, shape, num_classes, clip_grad)
        rows: List[Dict[str, Any]] = []
        for r in range(rounds):
            torch.set_num_threads(threads)
            progress(f'round {r + 1}/{rounds}: Runner and raw steps interleaved '
                     f'({warmup}+{iters} iters)')
            row = runner_round(task, rule, batch, warmup, iters, raw_step,
                               os.path.join(tmp, f'run{r}'), data_root, seed, data)
            rows.append(row)
            progress(f'round {r + 1}/{rounds}: raw {batch * iters / sum(row["raw_s"]):.0f} '
                     f'img/s, Runner {batch * iters / sum(row["runner_s"]):.0f} img/s '
                     f'(ratio {sum(row["raw_s"]) / sum(row["runner_s"]):.3f})')
    n = batch * iters
    raw_ips = [n / sum(x['raw_s']) for x in rows]
    run_ips = [n / sum(x['runner_s']) for x in rows]
    ratios = [b / a for a, b in zip(raw_ips, run_ips)]
    raw_all = [t for x in rows for t in x['raw_s']]
    run_all = [t for x in rows for t in x['runner_s']]
    return dict(
        task=task, rule=os.path.basename(rule), data=data, batch=batch, iters=iters, warmup=warmup,
        rounds=rounds, threads=threads, torch_threads=torch.get_num_threads(),
        raw_clip_grad=clip_grad,
        torch_version=torch.__version__,
        raw_img_s=sum(raw_ips) / rounds, runner_img_s=sum(run_ips) / rounds,
        ratio=statistics.median(ratios),
        ratio_median_iter=statistics.median(raw_all) / statistics.median(run_all),
        raw_img_s_rounds=raw_ips, runner_img_s_rounds=run_ips, ratio_rounds=ratios,
        raw_ms_median=1e3 * statistics.median(raw_all),
        runner_ms_median=1e3 * statistics.median(run_all),
        runner_build_s=[x['build_s'] for x in rows],
        loader_workers=rows[0]['loader_workers'], dataset=rows[0]['dataset'],
        loadavg_start=list(load0), loadavg_end=list(os.getloadavg()), cpus=os.cpu_count(),
        python=platform.python_version(), machine=platform.machine())
