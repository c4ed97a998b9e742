"""Latency predictors: non-negative least squares on analytic cost terms (the baseline,
:class:`LatencyPredictor`) or on per-kernel cost terms (:class:`KernelLatencyPredictor`).

Latency of a plain ViT (or PiT) on one (device, backend) is close to a non-negative mix of a
few work terms, each summed over the blocks (and stages) of the network and multiplied by the
batch size:

=============  ==========================================================================
feature        meaning (``N`` tokens, ``D`` width, ``F`` MLP hidden, ``H`` heads, per block)
=============  ==========================================================================
``linear``     ``N (4 D^2 + 2 D F)`` MACs of the qkv / proj / fc1 / fc2 matmuls
``attention``  ``2 N^2 D`` MACs of ``Q K^T`` and ``A V``
``softmax``    ``H N^2`` attention-score elements (softmax, scaling)
``elementwise`` ``N (D + F)`` elements (LayerNorms, residual adds, GELU)
``tokens``     ``N`` (per-token overhead: reshapes, copies)
``embed``      patch-embedding (and PiT pooling) MACs, once per image
``weights``    ``4 D^2 + 2 D F`` matmul weights read per forward (memory-bound small-token
               matmuls; not multiplied by the batch)
``blocks``     number of blocks (per-block dispatch overhead; not multiplied by the batch)
``const``      1 (per-call overhead)
=============  ==========================================================================

The fit minimises the *relative* squared error (rows weighted by ``1 / latency``), matching the
mean-absolute-percentage-error it is judged by, under ``coef >= 0`` (Lawson-Hanson NNLS on
column-normalised features), so an extrapolated architecture never gets a negative latency.
The fit and prediction are numpy; the per-family terms come from the family protocol
(:mod:`mmvitscale.families`, which imports the model files on first use).
"""
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..fileio import atomic_write
from ..families import spec_family, spec_from_dict
from ..scaling import PiTArch, ViTArch
from .kernels import GROUPS, KERNEL_FEATURES, kernel_features

FEATURES = ('linear', 'attention', 'softmax', 'elementwise', 'tokens', 'embed', 'weights',
            'blocks', 'const')
FORMAT = 'mmvitscale-latency-predictor'
ArchLike = Union[ViTArch, PiTArch, Mapping[str, Any]]


def mape(pred: Sequence[float], true: Sequence[float]) -> float:
    """Mean absolute percentage error, in percent: ``100 * mean(|pred - true| / true)``."""
    p, t = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f'mape: {p.size} predictions for {t.size} true values')
    if not t.size:
        raise ValueError('mape: no values')
    if not np.all(t > 0) or not np.all(np.isfinite(p)):
        raise ValueError('mape: true values must be positive and predictions finite')
    return float(np.mean(np.abs(p - t) / t) * 100.0)


def arch_from_dict(arch: ArchLike) -> Union[ViTArch, PiTArch]:
    """A :class:`ViTArch` / :class:`PiTArch` (any latency family's spec), or its ``as_dict()``
    (e.g. a latency-table row) as one (:func:`mmvitscale.families.spec_from_dict`)."""
    return spec_from_dict(arch)


def family_of(arch: ArchLike) -> str:
    """The name of the family of a spec or its dict (``'vit'``, ``'pit'``)."""
    return spec_family(arch_from_dict(arch)).name


def features(arch: ArchLike, in_channels: int = 3, batch_size: int = 1) -> np.ndarray:
    """The :data:`FEATURES` vector of one forward pass of ``batch_size`` images."""
    arch = arch_from_dict(arch)
    fam = spec_family(arch)
    f = dict.fromkeys(FEATURES, 0.0)
    for n, d, hid, h, depth in fam.token_stages(arch):
        f['linear'] += depth * n * (4 * d * d + 2 * d * hid)
        f['attention'] += depth * 2 * n * n * d
        f['softmax'] += depth * h * n * n
        f['elementwise'] += depth * n * (d + hid)
        f['tokens'] += depth * n
        f['weights'] += depth * (4 * d * d + 2 * d * hid)
        f['blocks'] += depth
    f['embed'] = fam.embed_macs(arch, in_channels)
    vec = np.array([f[k] for k in FEATURES], dtype=np.float64)
    vec[:FEATURES.index('weights')] *= batch_size
    vec[FEATURES.index('const')] = 1.0
    return vec


def nnls(a: np.ndarray, b: np.ndarray, max_iter: Optional[int] = None) -> np.ndarray:
    """``argmin ||a x - b||`` subject to ``x >= 0`` (Lawson-Hanson active set)."""
    m, n = a.shape
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    tol = 10 * np.finfo(np.float64).eps * np.linalg.norm(a, 1) * max(m, n)
    w = a.T @ (b - a @ x)
    for _ in range(max_iter or 3 * n):
        if passive.all() or w[~passive].max(initial=-np.inf) <= tol:
            break
        passive[np.argmax(np.where(passive, -np.inf, w))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if z[passive].min() > 0:
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        x = z
        w = a.T @ (b - a @ x)
    return x


class LatencyPredictor:
    """Predict latency (ms) of unseen architectures from a few measured ones.

    Fit it per (device, backend, threads) setting: :meth:`fit` on measured architectures,
    :meth:`predict` for new ones, :meth:`save` / :meth:`load` as JSON. ``meta`` is free-form
    (fingerprint, source, fit statistics) and is saved with the coefficients.

    This class uses the analytic cost terms (:data:`FEATURES`) and is the baseline;
    :class:`KernelLatencyPredictor` sums per-kernel costs instead.
    """

    FEATURES: Tuple[str, ...] = FEATURES
    FORMAT = FORMAT
    kind = 'analytic'

    def featurize(self, arch: Union[ViTArch, PiTArch], in_channels: int = 3,
                  batch_size: int = 1) -> np.ndarray:
        """The feature vector of one forward pass (:data:`FEATURES` here)."""
        return features(arch, in_channels, batch_size)

    def __init__(self, meta: Optional[Mapping[str, Any]] = None) -> None:
        self.coef: Optional[np.ndarray] = None
        self.scale: Optional[np.ndarray] = None
        self.families: List[str] = []
        self.meta: Dict[str, Any] = dict(meta or {})

    # ------------------------------------------------------------------ fit / predict
    def fit(self, archs: Sequence[ArchLike], latencies_ms: Sequence[float],
            in_channels: Union[int, Sequence[int]] = 3,
            batch_size: Union[int, Sequence[int]] = 1) -> 'LatencyPredictor':
        """Fit on architectures and their measured latencies (ms per batch)."""
        archs = [arch_from_dict(a) for a in archs]
        y = np.asarray(latencies_ms, dtype=np.float64).ravel()
        if len(archs) != y.size:
            raise ValueError(f'fit: {len(archs)} architectures but {y.size} latencies')
        if len(archs) < 2:
            raise ValueError(f'fit: needs at least 2 measured architectures, got {len(archs)}')
        if not np.all(np.isfinite(y)) or not np.all(y > 0):
            raise ValueError('fit: latencies must be positive finite milliseconds')
        chans = _broadcast(in_channels, len(archs), 'in_channels')
        batches = _broadcast(batch_size, len(archs), 'batch_size')
        x = np.stack([self.featurize(a, c, b) for a, c, b in zip(archs, chans, batches)])
        scale = np.abs(x).max(axis=0)
        scale[scale == 0] = 1.0
        coef = nnls(x / scale / y[:, None], np.ones_like(y))  # relative error
        self.coef, self.scale = coef / scale, scale
        self.families = sorted({family_of(a) for a in archs})
        pred = x @ self.coef
        self.meta.update(n_train=len(archs), train_mape=mape(pred, y))
        return self

    def predict(self, arch: ArchLike, in_channels: int = 3, batch_size: int = 1,
                any_family: bool = False) -> float:
        """Predicted latency in ms of one forward pass of ``batch_size`` images.

        An architecture of a family the predictor was not fitted on is refused unless
        ``any_family`` (cross-family evaluation).
        """
        return float(self.featurize(self._check(arch, any_family), in_channels, batch_size)
                     @ self.coef)

    def _check(self, arch: ArchLike, any_family: bool) -> Union[ViTArch, PiTArch]:
        if self.coef is None:
            raise RuntimeError(f'{type(self).__name__}: call fit() or load() first')
        arch = arch_from_dict(arch)
        fam = family_of(arch)
        if fam not in self.families and not any_family:
            raise ValueError(f'this predictor was fitted on {self.families} architectures, '
                             f'not {fam!r}')
        return arch

    def predict_many(self, archs: Sequence[ArchLike], in_channels: int = 3,
                     batch_size: int = 1, any_family: bool = False) -> np.ndarray:
        """:meth:`predict` of each architecture, as an array."""
        return np.array([self.predict(a, in_channels, batch_size, any_family) for a in archs])

    def contributions(self, arch: ArchLike, in_channels: int = 3, batch_size: int = 1,
                      any_family: bool = False) -> Dict[str, float]:
        """Predicted ms per feature (they sum to :meth:`predict`)."""
        x = self.featurize(self._check(arch, any_family), in_channels, batch_size)
        return {k: float(v) for k, v in zip(self.FEATURES, x * self.coef)}

    @property
    def coefficients(self) -> Dict[str, float]:
        if self.coef is None:
            return {}
        return {k: float(v) for k, v in zip(self.FEATURES, self.coef)}

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> Dict[str, Any]:
        if self.coef is None:
            raise RuntimeError('LatencyPredictor: nothing to save before fit()')
        return dict(format=self.FORMAT, version=1, kind=self.kind, features=list(self.FEATURES),
                    coef=self.coef.tolist(), families=self.families, meta=self.meta)

    def save(self, path: str) -> str:
        """Write JSON atomically (temporary file + rename); returns ``path``."""
        data = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        atomic_write(path, data + '\n')
        return path

    @classmethod
    def load(cls, path: str) -> 'LatencyPredictor':
        """Read a file written by :meth:`save`; ``ValueError`` naming the file if it is not."""
        return cls.from_dict(_read_json(path), path)

    @classmethod
    def from_dict(cls, data: Any, path: str = '<dict>') -> 'LatencyPredictor':
        """Inverse of :meth:`to_dict`; ``path`` names the source in errors."""
        if not isinstance(data, dict) or data.get('format') != cls.FORMAT:
            raise ValueError(f'{path} is not a latency predictor (format != {cls.FORMAT!r})')
        if data.get('kind', 'analytic') != cls.kind:
            raise ValueError(f'{path} holds a {data.get("kind")!r} predictor, not '
                             f'{cls.kind!r} (use load_predictor)')
        if list(data.get('features', [])) != list(cls.FEATURES):
            raise ValueError(f'{path}: features {data.get("features")} differ from this '
                             f'version\'s {list(cls.FEATURES)}; refit the predictor')
        try:
            coef = np.asarray(data['coef'], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f'{path}: no numeric coefficients (coef)') from None
        if coef.shape != (len(cls.FEATURES), ) or not np.all(np.isfinite(coef)):
            raise ValueError(f'{path}: bad coefficients {data["coef"]!r}')
        out = cls(data.get('meta'))
        out.coef, out.families = coef, list(data.get('families') or ['vit'])
        return out

    @classmethod
    def from_table(cls, table: str, fingerprint: Union[str, Mapping[str, Any]],
                   family: Optional[str] = None, key: str = 'median_ms') -> 'LatencyPredictor':
        """Fit on the rows of a latency table (:mod:`.latency_table`) for one fingerprint.

        ``key`` is the row's latency statistic (``median_ms``, ``p10_ms``, ``min_ms`` where the
        writer added it); rows without it are skipped.
        """
        from .latency_table import fingerprint_id, read_rows
        rows = [r for r in read_rows(table, fingerprint)
                if (family is None or r.get('family') == family) and key in r]
        if len(rows) < 2:
            fid = fingerprint if isinstance(fingerprint, str) else fingerprint_id(fingerprint)
            raise ValueError(f'{table}: {len(rows)} rows for fingerprint {fid}'
                             f'{"" if family is None else " and family " + family}; '
                             'need at least 2 measured architectures')
        archs, chans = [], []
        for r in rows:
            arch = dict(r['arch'])
            shape = r.get('input_shape') or [3, *arch['img_size']]
            arch['img_size'] = list(shape[1:])  # measured at this input size
            archs.append(arch)
            chans.append(int(shape[0]))
        fp = rows[0]['fingerprint']
        out = cls(dict(fingerprint=fp, fingerprint_id=rows[0]['fingerprint_id'], table=table,
                       stat=key))
        return out.fit(archs, [r[key] for r in rows], chans,
                       [int(r.get('batch_size', 1)) for r in rows])


class KernelLatencyPredictor(LatencyPredictor):
    """Per-kernel latency model summed over the network (nn-Meter / HAT style).

    Every kernel of the forward pass (:func:`~mmvitscale.cost.kernels.kernels`) costs a
    non-negative mix of terms of its own shape; GEMM cost ``M K N (a + b/K + c/N + d/M)`` follows
    how GEMM efficiency falls for small dimensions. The per-kernel coefficients are fitted from
    whole-network latencies (same relative-error NNLS as the baseline), and are shared by ViT and
    PiT, so one fitted on ViT can predict PiT (``any_family=True``).
    """

    FEATURES = KERNEL_FEATURES
    kind = 'kernel'

    def featurize(self, arch: Union[ViTArch, PiTArch], in_channels: int = 3,
                  batch_size: int = 1) -> np.ndarray:
        return kernel_features(arch, in_channels, batch_size)

    def group_contributions(self, arch: ArchLike, in_channels: int = 3, batch_size: int = 1,
                            any_family: bool = False) -> Dict[str, float]:
        """Predicted ms per kernel group (:data:`~mmvitscale.cost.kernels.GROUPS`)."""
        parts = self.contributions(arch, in_channels, batch_size, any_family)
        return {g: sum(parts[k] for k in keys) for g, keys in GROUPS.items()}


PREDICTORS = {'analytic': LatencyPredictor, 'kernel': KernelLatencyPredictor}


def make_predictor(kind: str, meta: Optional[Mapping[str, Any]] = None) -> LatencyPredictor:
    """An unfitted predictor of ``kind`` (``analytic`` or ``kernel``)."""
    if kind not in PREDICTORS:
        raise ValueError(f'unknown predictor kind {kind!r} (choose from '
                         f'{", ".join(PREDICTORS)})')
    return PREDICTORS[kind](meta)


CALIBRATION_METHODS = ('scale', 'affine', 'kernel', 'feature')
CALIBRATED_FORMAT = 'mmvitscale-calibrated-predictor'


class CalibratedPredictor:
    """A fitted base predictor times a calibration fitted on another setting
    (:func:`mmvitscale.cost.calibration.calibrate` fits one).

    ``params``: ``scale`` -> ``{'s'}``, ``affine`` -> ``{'a', 'b'}``, ``kernel`` -> one factor
    per group of :data:`~.kernels.GROUPS`, ``feature`` -> one per kernel cost term.
    """

    def __init__(self, base: LatencyPredictor, method: str, params: Mapping[str, float],
                 meta: Optional[Mapping[str, Any]] = None) -> None:
        if method not in CALIBRATION_METHODS:
            raise ValueError(f'method must be one of {CALIBRATION_METHODS}, got {method!r}')
        if method in ('kernel', 'feature') and not isinstance(base, KernelLatencyPredictor):
            raise ValueError(f'method {method!r} needs a KernelLatencyPredictor base, got a '
                             f'{type(base).__name__}')
        self.base, self.method = base, method
        self.params = {k: float(v) for k, v in params.items()}
        self.meta: Dict[str, Any] = dict(meta or {})

    def predict(self, arch: ArchLike, in_channels: int = 3, batch_size: int = 1,
                any_family: bool = False) -> float:
        """Calibrated latency in ms (same arguments as the base predictor's ``predict``)."""
        if self.method in ('kernel', 'feature'):
            parts = calibration_parts(self.base, self.method, arch, in_channels, batch_size,
                                      any_family)
            return float(sum(self.params[g] * v for g, v in parts.items()))
        p = self.base.predict(arch, in_channels, batch_size, any_family)
        if self.method == 'scale':
            return self.params['s'] * p
        return max(self.params['a'] * p + self.params['b'], 1e-3 * self.params['a'] * p)

    def predict_many(self, archs: Sequence[ArchLike], in_channels: int = 3,
                     batch_size: int = 1, any_family: bool = False) -> np.ndarray:
        return np.array([self.predict(a, in_channels, batch_size, any_family) for a in archs])

    @property
    def families(self) -> List[str]:
        return self.base.families

    def to_dict(self) -> Dict[str, Any]:
        return dict(format=CALIBRATED_FORMAT, version=1, method=self.method,
                    params=self.params, base=self.base.to_dict(), meta=self.meta)

    def save(self, path: str) -> str:
        """Write JSON atomically; :func:`load_predictor` reads it back."""
        atomic_write(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + '\n')
        return path

    @classmethod
    def from_dict(cls, data: Any, path: str = '<dict>') -> 'CalibratedPredictor':
        if not isinstance(data, dict) or data.get('format') != CALIBRATED_FORMAT:
            raise ValueError(f'{path} is not a calibrated latency predictor')
        base = data.get('base') or {}
        kind = base.get('kind', 'analytic') if isinstance(base, dict) else None
        if kind not in PREDICTORS:
            raise ValueError(f'{path}: unknown base predictor kind {kind!r}')
        return cls(PREDICTORS[kind].from_dict(base, path), data.get('method'),
                   data.get('params') or {}, data.get('meta'))


def calibration_parts(base: KernelLatencyPredictor, method: str, arch: ArchLike,
                      in_channels: int = 3, batch_size: int = 1,
                      any_family: bool = False) -> Dict[str, float]:
    """Predicted ms per kernel group (``method='kernel'``) or per kernel cost term
    (``'feature'``): the parts a calibration scales one factor each."""
    if method == 'kernel':
        return base.group_contributions(arch, in_channels, batch_size, any_family)
    return base.contributions(arch, in_channels, batch_size, any_family)


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f'latency predictor file not found: {path}') from None
    except IsADirectoryError:
        raise ValueError(f'latency predictor path is a folder: {path}') from None
    except ValueError as err:
        raise ValueError(f'{path} is not a latency predictor (bad JSON: {err})') from None


def load_predictor(path: str) -> Union[LatencyPredictor, CalibratedPredictor]:
    """Any saved predictor: analytic, kernel, or calibrated (:class:`CalibratedPredictor`)."""
    data = _read_json(path)
    if isinstance(data, dict) and data.get('format') == CALIBRATED_FORMAT:
        return CalibratedPredictor.from_dict(data, path)
    kind = data.get('kind', 'analytic') if isinstance(data, dict) else None
    if kind not in PREDICTORS:
        raise ValueError(f'{path}: unknown predictor kind {kind!r}')
    return PREDICTORS[kind].from_dict(data, path)


def _broadcast(value: Union[int, Sequence[int]], n: int, name: str) -> List[int]:
    values = [value] * n if isinstance(value, int) else list(value)
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                               for v in values):
        raise ValueError(f'fit: {name} must be a positive int or one per architecture, '
                         f'got {value!r}')
    return values
