"""Hardware cost: FLOPs / params with attention counted, and measured latency.

Lives apart from the models: it works on any ``nn.Module`` or resolved architecture.
"""
from ..models.vit import vit_flops, vit_params  # closed forms live with the model
from .counter import FlopCounter, count_params, get_complexity
from .latency import cpu_name, device_name, measure_latency

__all__ = ['FlopCounter', 'count_params', 'cpu_name', 'device_name', 'get_complexity',
           'measure_latency', 'vit_flops', 'vit_params']
