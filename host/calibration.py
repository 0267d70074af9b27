"""Range setting for activation quantization: which [min, max] each tensor gets (pure numpy).

The converter's own Min-Max (method `minmax`) is the reference. The other methods choose a
range from the same calibration activations (the float32 model run by LiteRT on the
calibration samples, see edgeq.host.quantize) and hand it to ai-edge-quantizer:

- `minmax`: [min(x), max(x)] over all calibration values (the paper's Min-Max). Done by the
  TFLite converter itself (its calibrator keeps the global min and max).
- `aeq-minmax`: ai-edge-quantizer's own calibration, left as it is. Despite its name
  (MIN_MAX_UNIFORM_QUANT) it is not the global min/max: Calibrator's default update,
  qsv_utils.moving_average_update, keeps m_k = 0.95 m_{k-1} + 0.05 min(sample k) (same for
  max) over the calibration samples, one per step. So on data with outliers it gives
  narrower ranges than the converter (measured: README, "Calibration methods"). The
  `ranges` recorded for it are the global Min-Max ones (min = minmax_min); the file's
  scales are ai-edge-quantizer's.
- `percentile:P` (0 < P < 100, e.g. 99.99): [Q(100 - P), Q(P)] where Q(p) is the p-th
  percentile of all calibration values of that tensor, read from a histogram of HIST_BINS
  equal bins over [min, max] (linear inside the bin); values beyond are clipped (outlier
  clipping). For a ReLU output (min = 0) the lower end stays 0.
- `mse`: the range [t * min, t * max], t in (0, 1] on a grid of MSE_STEPS values, that
  minimises the expected squared quantization error over the histogram,
      E(t) = sum_b h_b * (c_b - Q_t(c_b))^2 / sum_b h_b,
  with c_b the bin centres and Q_t the 8-bit asymmetric quantize-dequantize of the range
  (scale s = (hi - lo) / 255, Q(x) = lo + s * clip(round((x - lo) / s), 0, 255)); shrinking
  both ends by the same t keeps the zero point. Clipping error and rounding error are both in E.
- `moving-average`: the calibration samples are taken in batches of MOVING_AVERAGE_BATCH;
  m_1 = min(batch 1), m_k = c * m_{k-1} + (1 - c) * min(batch k) with c = MOVING_AVERAGE_DECAY
  (the same for max), as TensorFlow's MovingAverageQuantizer and PyTorch's
  MovingAverageMinMaxObserver do during training.

Every range is widened to contain 0 (the int8 zero point must represent 0 exactly, as the
converter's nudging does). `quantization_noise(...)` gives the per-tensor normalised error
E / var(x) of a range, the per-layer error --float-fallback ranks layers by.

Weights (`weight_thresholds`): int8 weights are symmetric (zero point 0), so a weight range
is one threshold T per tensor (per-tensor) or per output channel (per-channel), the int8 scale
being T / 127. `minmax`, `aeq-minmax` and `moving-average` keep T = max|w| (what both
quantizers do). The two clipping methods choose T themselves:
- `percentile:P`: T = the P-th percentile of |w| (numpy's linear interpolation between the
  sorted |w|), over the tensor or over each channel's values.
- `mse`: T = t * max|w|, t in (0, 1] on the MSE_STEPS grid, minimising
  mean((w - Q_T(w))^2) with Q_T(w) = s * clip(round(w / s), -127, 127), s = T / 127.
ai-edge-quantizer takes no weight ranges: edgeq.host.quantize clips the float weights to
[-T, T] before quantizing, so the quantizer's own max|w| of the clipped weights is T.
Imports: standard library, numpy, edgeq.device.errors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from edgeq.device.errors import EdgeqError

HIST_BINS = 2048
MSE_STEPS = 200
MOVING_AVERAGE_BATCH = 16
MOVING_AVERAGE_DECAY = 0.9
NUM_LEVELS = 256  # int8

CONVERTER_METHODS = ("minmax",)
AEQ_METHODS = ("aeq-minmax", "percentile", "mse", "moving-average")
METHOD_NAMES = ("minmax", "aeq-minmax", "percentile:P", "mse", "moving-average")


class CalibrationMethodError(EdgeqError):
    """A calibration method name or parameter that edgeq does not know."""


@dataclass(frozen=True)
class Method:
    """A parsed calibration method: `name` ("minmax", "aeq-minmax", "percentile", "mse",
    "moving-average") and, for percentile, `percentile` (P)."""

    name: str
    percentile: Optional[float] = None

    @property
    def label(self) -> str:
        """The method as users write it: "percentile:99.99", "mse", ..."""
        return f"percentile:{self.percentile:g}" if self.name == "percentile" else self.name

    @property
    def quantizer(self) -> str:
        """Which quantizer makes the file: "tflite-converter" or "ai-edge-quantizer"."""
        return "tflite-converter" if self.name in CONVERTER_METHODS else "ai-edge-quantizer"

    def parameters(self) -> dict[str, Any]:
        """The method's parameters as recorded in the manifest."""
        if self.name == "percentile":
            return {"percentile": self.percentile, "hist_bins": HIST_BINS}
        if self.name == "mse":
            return {"hist_bins": HIST_BINS, "steps": MSE_STEPS, "num_bits": 8}
        if self.name == "moving-average":
            return {"batch": MOVING_AVERAGE_BATCH, "decay": MOVING_AVERAGE_DECAY}
        return {}


def parse_method(text: str) -> Method:
    """"percentile:99.99" -> Method("percentile", 99.99); CalibrationMethodError otherwise."""
    raw = str(text).strip()
    name, _, arg = raw.partition(":")
    name = name.strip().lower()
    hint = f"choose one of {', '.join(METHOD_NAMES)} (e.g. percentile:99.99)"
    if name == "percentile":
        try:
            p = float(arg)
        except ValueError:
            raise CalibrationMethodError(
                f"percentile needs a number: {raw!r}", hint="e.g. percentile:99.9 or "
                "percentile:99.99") from None
        if not (math.isfinite(p) and 50.0 < p < 100.0):
            raise CalibrationMethodError(
                f"percentile must be between 50 and 100 (exclusive), got {arg.strip()}",
                hint="e.g. percentile:99.9 or percentile:99.99")
        return Method("percentile", p)
    if arg or name not in ("minmax", "aeq-minmax", "mse", "moving-average"):
        raise CalibrationMethodError(f"unknown calibration method {raw!r}", hint=hint)
    return Method(name)


def parse_methods(text: str) -> list[Method]:
    """"minmax,percentile:99.99,mse" -> [Method, ...] (at least one, no repeats)."""
    methods = [parse_method(v) for v in str(text).split(",") if v.strip()]
    if not methods:
        raise CalibrationMethodError("no calibration method given",
                                     hint="e.g. --methods minmax,percentile:99.99,mse")
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise CalibrationMethodError(f"a method is repeated in {text!r}",
                                     hint="name each method once")
    return methods


@dataclass
class TensorStats:
    """What the calibration saw of one tensor: overall and per-batch min/max, and (second
    pass) a histogram of HIST_BINS bins over [min, max]."""

    min: float = math.inf
    max: float = -math.inf
    batch_mins: list[float] = field(default_factory=list)
    batch_maxs: list[float] = field(default_factory=list)
    hist: Optional[np.ndarray] = None
    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def observe_batch(self, values: np.ndarray) -> None:
        """First pass: one batch of calibration values."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        lo, hi = float(v.min()), float(v.max())
        self.batch_mins.append(lo)
        self.batch_maxs.append(hi)
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += int(v.size)
        self.total += float(v.sum())
        self.total_sq += float(np.dot(v, v))

    @property
    def edges(self) -> np.ndarray:
        hi = self.max if self.max > self.min else self.min + 1e-6
        return np.linspace(self.min, hi, HIST_BINS + 1)

    def observe_histogram(self, values: np.ndarray) -> None:
        """Second pass: add values to the histogram over the first pass's [min, max]."""
        h, _ = np.histogram(np.asarray(values, dtype=np.float64).ravel(), bins=self.edges)
        self.hist = h if self.hist is None else self.hist + h

    @property
    def variance(self) -> float:
        if self.count == 0:
            return 0.0
        mean = self.total / self.count
        return max(self.total_sq / self.count - mean * mean, 0.0)


def with_zero(lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] widened to contain 0 (and never empty)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    return lo, hi


def minmax_range(stats: TensorStats) -> tuple[float, float]:
    """[min, max] of every calibration value (with 0)."""
    return with_zero(stats.min, stats.max)


def percentile_from_histogram(hist: np.ndarray, edges: np.ndarray, p: float) -> float:
    """The p-th percentile (0..100) of the histogrammed values, linear inside a bin."""
    cum = np.cumsum(hist, dtype=np.float64)
    total = cum[-1]
    if total <= 0:
        return float(edges[0])
    target = total * p / 100.0
    b = int(np.searchsorted(cum, target, side="left"))
    b = min(b, len(hist) - 1)
    before = cum[b - 1] if b > 0 else 0.0
    frac = 0.0 if hist[b] == 0 else (target - before) / hist[b]
    return float(edges[b] + min(max(frac, 0.0), 1.0) * (edges[b + 1] - edges[b]))


def percentile_range(stats: TensorStats, p: float) -> tuple[float, float]:
    """[Q(100 - p), Q(p)] from the histogram (with 0)."""
    hist = _hist(stats)
    lo = percentile_from_histogram(hist, stats.edges, 100.0 - p)
    hi = percentile_from_histogram(hist, stats.edges, p)
    return with_zero(lo if stats.min < 0 else 0.0, hi)


def quantization_mse(hist: np.ndarray, edges: np.ndarray, lo: float, hi: float,
                     levels: int = NUM_LEVELS) -> float:
    """E = sum h_b (c_b - Q(c_b))^2 / sum h_b for the range [lo, hi] (see module docstring)."""
    centres = (edges[:-1] + edges[1:]) / 2.0
    scale = (hi - lo) / (levels - 1)
    q = lo + scale * np.clip(np.round((centres - lo) / scale), 0, levels - 1)
    total = float(hist.sum())
    return float(np.dot(hist, (centres - q) ** 2) / total) if total > 0 else 0.0


def mse_range(stats: TensorStats) -> tuple[float, float]:
    """The [t * min, t * max] (t on a grid in (0, 1]) with the least quantization MSE."""
    hist = _hist(stats)
    lo0, hi0 = minmax_range(stats)
    best: tuple[float, float, float] = (math.inf, lo0, hi0)
    for t in np.linspace(1.0 / MSE_STEPS, 1.0, MSE_STEPS):
        lo, hi = with_zero(lo0 * t, hi0 * t)
        err = quantization_mse(hist, stats.edges, lo, hi)
        if err < best[0]:
            best = (err, lo, hi)
    return best[1], best[2]


def moving_average_range(stats: TensorStats, *, batch: int = 1,
                         decay: float = MOVING_AVERAGE_DECAY) -> tuple[float, float]:
    """EMA of the per-batch min and max (batches of `batch` observed batches each)."""
    if not stats.batch_mins:
        return with_zero(0.0, 0.0)
    mins = [min(stats.batch_mins[i:i + batch]) for i in range(0, len(stats.batch_mins), batch)]
    maxs = [max(stats.batch_maxs[i:i + batch]) for i in range(0, len(stats.batch_maxs), batch)]
    lo, hi = mins[0], maxs[0]
    for m, x in zip(mins[1:], maxs[1:]):
        lo = decay * lo + (1.0 - decay) * m
        hi = decay * hi + (1.0 - decay) * x
    return with_zero(lo, hi)


def choose_range(method: Method, stats: TensorStats, *,
                 samples_per_batch: int = 1) -> tuple[float, float]:
    """The [min, max] `method` chooses for a tensor. `samples_per_batch`: how many calibration
    samples one observe_batch call held (moving-average groups them to MOVING_AVERAGE_BATCH)."""
    if method.name in ("minmax", "aeq-minmax"):
        return minmax_range(stats)
    if method.name == "percentile":
        return percentile_range(stats, float(method.percentile or 99.99))
    if method.name == "mse":
        return mse_range(stats)
    if method.name == "moving-average":
        return moving_average_range(
            stats, batch=max(1, MOVING_AVERAGE_BATCH // max(1, samples_per_batch)))
    raise CalibrationMethodError(f"unknown calibration method {method.name!r}",
                                 hint=f"choose one of {', '.join(METHOD_NAMES)}")


#: the methods that choose weight thresholds below max|w| (the others keep Min-Max weights)
WEIGHT_RANGE_METHODS = ("percentile", "mse")
WEIGHT_LEVELS = 127  # symmetric int8 weights: codes -127..127


def weight_mse(values: np.ndarray, threshold: float) -> float:
    """mean((w - Q_T(w))^2) of symmetric 8-bit weights with threshold T (module docstring)."""
    w = np.asarray(values, dtype=np.float64).ravel()
    if threshold <= 0 or w.size == 0:
        return float(np.mean(w * w)) if w.size else 0.0
    s = threshold / WEIGHT_LEVELS
    q = s * np.clip(np.round(w / s), -WEIGHT_LEVELS, WEIGHT_LEVELS)
    return float(np.mean((w - q) ** 2))


def weight_threshold(method: Method, values: np.ndarray) -> float:
    """The symmetric threshold T `method` chooses for one set of weights (a tensor or one
    channel): max|w|, the P-th percentile of |w|, or the MSE-optimal t * max|w|."""
    a = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    top = float(a.max()) if a.size else 0.0
    if top <= 0 or method.name not in WEIGHT_RANGE_METHODS:
        return top
    if method.name == "percentile":
        return min(float(np.percentile(a, float(method.percentile or 99.99))), top)
    best = (math.inf, top)
    for t in np.linspace(1.0 / MSE_STEPS, 1.0, MSE_STEPS):
        err = weight_mse(a, top * t)
        if err < best[0]:
            best = (err, top * float(t))
    return best[1]


def weight_thresholds(method: Method, values: np.ndarray,
                      channel_axis: Optional[int]) -> np.ndarray:
    """Per output channel along `channel_axis` (or one for the whole tensor when None) the
    threshold `method` chooses; float64 array of length channels (or 1)."""
    w = np.asarray(values, dtype=np.float64)
    if channel_axis is None:
        return np.array([weight_threshold(method, w)])
    moved = np.moveaxis(w, channel_axis, 0).reshape(w.shape[channel_axis], -1)
    return np.array([weight_threshold(method, row) for row in moved])


def clip_weights(values: np.ndarray, thresholds: np.ndarray,
                 channel_axis: Optional[int]) -> np.ndarray:
    """`values` clipped to [-T, T] per channel (or per tensor), same dtype and shape."""
    w = np.asarray(values)
    t = np.asarray(thresholds, dtype=np.float64)
    if channel_axis is not None:
        shape = [1] * w.ndim
        shape[channel_axis] = -1
        t = t.reshape(shape)
    return np.clip(w, -t, t).astype(w.dtype)


def quantization_noise(stats: TensorStats, lo: float, hi: float) -> float:
    """Normalised quantization error of a tensor under [lo, hi]: E / var(x) (0 = none)."""
    var = stats.variance
    if var <= 0:
        return 0.0
    return quantization_mse(_hist(stats), stats.edges, lo, hi) / var


def clipped_fraction(stats: TensorStats, lo: float, hi: float) -> float:
    """Share of the calibration values outside [lo, hi] (what the range clips)."""
    hist = _hist(stats)
    centres = (stats.edges[:-1] + stats.edges[1:]) / 2.0
    total = float(hist.sum())
    return float(hist[(centres < lo) | (centres > hi)].sum() / total) if total > 0 else 0.0


def _hist(stats: TensorStats) -> np.ndarray:
    if stats.hist is None:
        raise CalibrationMethodError("the tensor has no histogram yet",
                                     hint="observe_histogram runs after observe_batch")
    return stats.hist
