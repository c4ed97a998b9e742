"""Wall-clock latency measurement (HW-NAS-Bench style protocol)."""
import statistics
import time
from typing import Dict, Optional, Sequence

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224),
                    batch_size: int = 1, warmup_s: float = 1.0, min_warmup: int = 3,
                    repeats: int = 30, device: Optional[str] = None) -> Dict[str, float]:
    """Median / spread of forward latency in milliseconds per batch.

    Protocol: eval mode, ``no_grad``, warm-up for ``warmup_s`` seconds (at least
    ``min_warmup`` runs), then ``repeats`` timed runs, each bracketed by device synchronisation.
    """
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    param = next(model.parameters(), None)
    dev = torch.device(device) if device else (param.device if param is not None else
                                               torch.device('cpu'))
    model = model.to(dev).eval()
    x = torch.randn(batch_size, *input_shape, device=dev)
    start, runs = time.perf_counter(), 0
    while runs < min_warmup or time.perf_counter() - start < warmup_s:
        model(x)
        runs += 1
    _sync(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        _sync(dev)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = (statistics.quantiles(times, n=10, method='inclusive') if len(times) > 1 else
         [times[0]] * 9)
    return dict(median_ms=statistics.median(times), p10_ms=q[0], p90_ms=q[-1],
                mean_ms=statistics.fmean(times), repeats=repeats, batch_size=batch_size,
                threads=torch.get_num_threads(), device=str(dev))


def cpu_name() -> str:
    """The CPU model as the OS reports it (``/proc/cpuinfo`` on Linux)."""
    import platform
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str = 'cpu') -> str:
    """Human-readable name of a torch device (GPU name or CPU model)."""
    dev = torch.device(device)
    if dev.type == 'cuda':
        return torch.cuda.get_device_name(dev)
    return cpu_name()
