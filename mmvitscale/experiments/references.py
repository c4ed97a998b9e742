"""Reference classifiers for the offline cls task: what simple models reach on the same data
in the same time, so a ViT's top-1 can be read against them.

``logistic`` (multinomial logistic regression on the normalised pixels) and ``cnn`` (two 3x3
conv + max-pool stages, 32 and 64 channels, then a linear layer) train on the first ``train``
Fashion-MNIST training images and are tested on the first ``val`` test images, with AdamW and a
cosine schedule over as many epochs as fit in ``seconds`` (timed on a first, throw-away epoch).
"""
import math
import time
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

KINDS = ('logistic', 'cnn')
MEAN, STD = 72.94, 90.02  # the cls configs' data preprocessor


def build_reference(kind: str) -> Any:
    """An untrained reference model ``kind`` for 1 x 28 x 28 inputs and 10 classes."""
    from torch import nn
    if kind == 'logistic':
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    if kind == 'cnn':
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 10))
    raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')


def _tensors(images: np.ndarray, labels: np.ndarray) -> Tuple[Any, Any]:
    import torch
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    return (x - MEAN) / STD, torch.from_numpy(labels.astype(np.int64))


def _epoch(model: Any, opt: Any, x: Any, y: Any, batch: int, seed: int,
           lr_at: Callable[[int], float], step: int) -> int:
    import torch
    import torch.nn.functional as F
    model.train()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for i in range(0, len(x), batch):
        idx = perm[i:i + batch]
        for group in opt.param_groups:
            group['lr'] = lr_at(step)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    return step


def train_reference(kind: str, seconds: float, seed: int = 0, train: int = 60000,
                    val: int = 10000, batch: int = 128, lr: float = 3e-3,
                    threads: Optional[int] = None, data_root: Optional[str] = None,
                    max_epochs: int = 100) -> Dict[str, Any]:
    """Train reference ``kind`` for about ``seconds`` of training time; return its row.

    Raises ``ValueError`` naming the argument for a bad kind, budget or size, before any work.
    """
    import torch

    from ..datasets.fashion_mnist import load_split
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    if not seconds > 0:
        raise ValueError(f'seconds must be > 0, got {seconds!r}')
    for name, value in (('train', train), ('val', val), ('batch', batch)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    if threads:
        torch.set_num_threads(threads)
    x, y = _tensors(*(a[:train] for a in load_split('train', data_root)))
    xv, yv = _tensors(*(a[:val] for a in load_split('test', data_root)))
    # a throw-away epoch times one epoch of this model on this machine
    torch.manual_seed(seed)
    probe = build_reference(kind)
    t0 = time.perf_counter()
    _epoch(probe, torch.optim.AdamW(probe.parameters(), lr=lr), x, y, batch, seed,
           lambda s: lr, 0)
    epoch_s = time.perf_counter() - t0
    epochs = int(max(1, min(max_epochs, seconds // epoch_s)))
    torch.manual_seed(seed)
    model = build_reference(kind)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(x) / batch)
    warm = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / warm
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    t0, step = time.perf_counter(), 0
    for epoch in range(epochs):
        step = _epoch(model, opt, x, y, batch, seed * 1000 + epoch, lr_at, step)
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(xv[i:i + 1000]).argmax(1) == yv[i:i + 1000]).sum())
                      for i in range(0, len(xv), 1000))
    return dict(kind=kind, seed=seed, top1=100.0 * correct / len(xv), epochs=epochs,
                train_s=train_s, budget_s=seconds, probe_epoch_s=epoch_s, train=len(x),
                val=len(xv), batch=batch, lr=lr, threads=torch.get_num_threads(),
                params=sum(p.numel() for p in model.parameters()))
