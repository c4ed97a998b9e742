"""Few-shot calibration of a fitted latency predictor to a new (device, backend, threads).

A predictor fitted on one setting knows the *shape* of each kernel's cost; on another setting
mostly the speed of each kernel group changes (GEMMs gain from more threads, ONNX Runtime
runs GELU / softmax as separate kernels, ...). :func:`calibrate` fits a low-dimensional
correction from a few (<= 20) measured architectures of the new setting:

* ``scale``: one factor, ``y = s * p``;
* ``affine``: ``y = a * p + b`` (``b``: a change of per-call overhead, either sign;
  predictions are kept positive);
* ``kernel``: one factor per kernel group of a :class:`~.predictor.KernelLatencyPredictor`
  (GEMM, attention, memory-bound, overhead; :data:`~.kernels.GROUPS`), shrunk towards the
  single ``scale`` factor with a ridge penalty so five samples cannot overfit four factors;
* ``feature``: the same with one factor per kernel cost term (:data:`~.kernels.KERNEL_FEATURES`).

All minimise the relative squared error, like the predictors. :func:`calibration_curve` reports
held-out MAPE against the number of calibration samples next to fitting from scratch.
"""
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .kernels import GROUPS
from .predictor import (CALIBRATED_FORMAT as FORMAT, CALIBRATION_METHODS as METHODS,
                        ArchLike, CalibratedPredictor, KernelLatencyPredictor, LatencyPredictor,
                        arch_from_dict, calibration_parts, make_predictor, mape, nnls)

__all__ = ['METHODS', 'FORMAT', 'CalibratedPredictor', 'within', 'calibrate',
           'calibration_curve']


def within(pred: Sequence[float], true: Sequence[float], tol_pct: float = 10.0) -> float:
    """Percentage of predictions within ``+-tol_pct`` percent of the true value."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or not t.size:
        raise ValueError(f'within: {p.size} predictions for {t.size} true values')
    return float(np.mean(np.abs(p - t) / t <= tol_pct / 100.0) * 100.0)


def _scale(p: np.ndarray, y: np.ndarray) -> float:
    r = p / y  # minimise sum (s r - 1)^2
    return float(r.sum() / (r @ r))


def calibrate(base: LatencyPredictor, archs: Sequence[ArchLike], latencies_ms: Sequence[float],
              method: str = 'kernel', in_channels: int = 3, batch_size: int = 1,
              ridge: float = 0.01, meta: Optional[Mapping[str, Any]] = None
              ) -> CalibratedPredictor:
    """Calibrate ``base`` (fitted elsewhere) on ``archs`` measured in the new setting.

    Args:
        base: a fitted predictor of the source setting.
        archs, latencies_ms: the calibration samples of the target setting (ms per batch).
        method: ``scale``, ``affine`` or ``kernel`` (module docstring).
        ridge: ``kernel`` / ``feature``: penalty ``ridge * sum_g (s_g - s)^2`` towards the single
            scale ``s``, in the units of the mean relative squared error.
        meta: stored with the result (e.g. the target fingerprint).
    """
    if method not in METHODS:
        raise ValueError(f'calibrate: method must be one of {METHODS}, got {method!r}')
    if ridge < 0:
        raise ValueError(f'calibrate: ridge must be >= 0, got {ridge}')
    archs = [arch_from_dict(a) for a in archs]
    y = np.asarray(latencies_ms, dtype=np.float64).ravel()
    if len(archs) != y.size:
        raise ValueError(f'calibrate: {len(archs)} architectures but {y.size} latencies')
    need = 2 if method == 'affine' else 1
    if y.size < need:
        raise ValueError(f'calibrate: method {method!r} needs at least {need} measured '
                         f'architecture(s), got {y.size}')
    if not np.all(np.isfinite(y)) or not np.all(y > 0):
        raise ValueError('calibrate: latencies must be positive finite milliseconds')
    p = base.predict_many(archs, in_channels, batch_size, any_family=True)
    s = _scale(p, y)
    if method == 'scale':
        params = dict(s=s)
    elif method == 'affine':
        a_mat = np.stack([p, np.ones_like(p)], axis=1) / y[:, None]
        a, b = np.linalg.lstsq(a_mat, np.ones_like(y), rcond=None)[0]
        params = dict(a=float(a), b=float(b)) if a > 0 else dict(a=s, b=0.0)
    else:
        if not isinstance(base, KernelLatencyPredictor):
            raise ValueError(f'calibrate: method {method!r} needs a KernelLatencyPredictor, '
                             f'got a {type(base).__name__}')
        groups = list(GROUPS) if method == 'kernel' else list(base.FEATURES)
        parts = np.array([[calibration_parts(base, method, a, in_channels, batch_size, True)[g]
                           for g in groups] for a in archs])
        a_mat = parts / y[:, None]
        lam = np.sqrt(ridge * y.size)  # penalty scales with the data term (a sum over rows)
        scale_ref = np.maximum(parts.mean(axis=0), 1e-12) / max(p.mean(), 1e-12)
        reg = np.diag(lam * np.sqrt(scale_ref))  # groups with little share are pulled harder
        aug_a = np.vstack([a_mat, reg])
        aug_b = np.concatenate([np.ones_like(y), reg @ np.full(len(groups), s)])
        factors = nnls(aug_a, aug_b)
        params = {g: float(v) for g, v in zip(groups, factors)}
    out = CalibratedPredictor(base, method, params, meta)
    pred = out.predict_many(archs, in_channels, batch_size, any_family=True)
    out.meta.update(n_calibration=int(y.size), calibration_mape=mape(pred, y), ridge=ridge)
    return out


def calibration_curve(base: LatencyPredictor, archs: Sequence[ArchLike],
                      latencies_ms: Sequence[float], test_archs: Sequence[ArchLike],
                      test_latencies_ms: Sequence[float], sizes: Sequence[int] = (5, 10, 20),
                      methods: Sequence[str] = METHODS, draws: int = 20, seed: int = 0,
                      scratch: Sequence[str] = ('analytic', 'kernel'), in_channels: int = 3,
                      ridge: float = 0.01,
                      progress: Optional[Callable[[int, int], None]] = None
                      ) -> List[Dict[str, Any]]:
    """Held-out error against the number of calibration samples.

    For each size ``k`` (at most ``len(archs)``) and each of ``draws`` seeded random subsets of
    ``archs``, calibrate ``base`` with every method and fit each ``scratch`` predictor kind from
    scratch on the same ``k`` samples; all are judged on the test set. Also reports ``base``
    uncalibrated (``k = 0``). Returns one row per (k, method): mean and worst MAPE over the
    draws, and mean % of test archs within +-10%.
    """
    archs = [arch_from_dict(a) for a in archs]
    y = np.asarray(latencies_ms, dtype=np.float64)
    t_archs = [arch_from_dict(a) for a in test_archs]
    t_y = np.asarray(test_latencies_ms, dtype=np.float64)
    if not t_archs:
        raise ValueError('calibration_curve: no test architectures')
    rng = np.random.default_rng(seed)
    p0 = base.predict_many(t_archs, in_channels, any_family=True)
    rows = [dict(k=0, method='uncalibrated', mape=mape(p0, t_y), worst_mape=mape(p0, t_y),
                 within10=within(p0, t_y), draws=1)]
    sizes = [k for k in sizes if 1 <= k <= len(archs)]
    total, done = len(sizes) * draws, 0
    for k in sizes:
        results: Dict[str, List[tuple]] = {}
        for _ in range(draws):
            idx = rng.choice(len(archs), size=k, replace=False)
            sub, sub_y = [archs[i] for i in idx], y[idx]
            for method in methods:
                if method in ('kernel', 'feature') and \
                        not isinstance(base, KernelLatencyPredictor):
                    continue
                if method == 'affine' and k < 2:
                    continue
                cal = calibrate(base, sub, sub_y, method, in_channels, ridge=ridge)
                pred = cal.predict_many(t_archs, in_channels, any_family=True)
                results.setdefault(method, []).append((mape(pred, t_y), within(pred, t_y)))
            for kind in scratch:
                if k < 2:
                    continue
                fitted = make_predictor(kind).fit(sub, sub_y, in_channels)
                pred = fitted.predict_many(t_archs, in_channels, any_family=True)
                results.setdefault(f'scratch-{kind}', []).append(
                    (mape(pred, t_y), within(pred, t_y)))
            done += 1
            if progress is not None:
                progress(done, total)
        for method, vals in results.items():
            m = np.array(vals)
            rows.append(dict(k=k, method=method, mape=float(m[:, 0].mean()),
                             worst_mape=float(m[:, 0].max()), within10=float(m[:, 1].mean()),
                             draws=len(vals)))
    return rows
