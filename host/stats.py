"""Small, exact statistics for the float32-vs-int8 report.

- `wilson_interval`: Wilson score interval for a binomial proportion (top-1 accuracy).
- `mcnemar`: McNemar's test on paired predictions of two models over the same images.
  The test only looks at the discordant pairs: b = images float32 gets right and int8 gets
  wrong, c = the reverse. Under H0 (both models equally accurate) b ~ Binomial(b + c, 1/2).
  For b + c < 25 (`EXACT_BELOW`) the two-sided exact binomial p-value is used,
  p = min(1, 2 * P[X <= min(b, c)]); otherwise the chi-square statistic with Edwards'
  continuity correction, (|b - c| - 1)^2 / (b + c), against chi-square with 1 degree of
  freedom (p = erfc(sqrt(stat / 2))). With b + c = 0 there is no evidence: p = 1.
- `bootstrap_median_interval` / `bootstrap_ratio_interval`: percentile bootstrap intervals
  for a latency median and for the ratio of two medians, seeded so reports are reproducible.

Pure standard library + numpy (no SciPy): normal quantiles come from statistics.NormalDist,
binomial tails from exact integer arithmetic (math.comb), chi-square(1) tails from math.erfc.
Imports: standard library, numpy.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

#: below this many discordant pairs McNemar uses the exact binomial test
EXACT_BELOW = 25

_BOOTSTRAP_CHUNK = 256


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (low, high) for `successes` out of `n` trials.

    Unlike the normal (Wald) interval it stays inside [0, 1] and behaves at p near 0 or 1,
    which matters for MNIST accuracies around 99 %. n = 0 gives (0, 1): no information.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return (0.0, 1.0)
    z = _z(confidence)
    p = successes / n
    z2n = z * z / n
    denom = 1.0 + z2n
    center = (p + z2n / 2.0) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n)) / denom
    # clamp the floating-point dust at the edges (the exact interval has low 0 at p=0, high 1 at p=1)
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return (low, high)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of model A vs model B on the same labelled images."""

    n: int                   # paired images
    both_correct: int
    a_only: int              # b: A right, B wrong
    b_only: int              # c: A wrong, B right
    both_wrong: int
    method: str              # "exact-binomial" | "chi2-cc" | "none"
    statistic: float         # chi-square statistic (chi2-cc) or min(b, c) (exact); 0 for none
    p_value: float

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["discordant"] = self.discordant
        return d


def binomial_two_sided_p(b: int, c: int) -> float:
    """Exact two-sided p-value of b successes in b + c fair coin flips (exact arithmetic)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


def chi2_cc_p(b: int, c: int) -> tuple[float, float]:
    """(statistic, p) of McNemar's chi-square with continuity correction, 1 d.o.f."""
    n = b + c
    if n == 0:
        return (0.0, 1.0)
    stat = (max(abs(b - c) - 1, 0) ** 2) / n
    return (float(stat), float(math.erfc(math.sqrt(stat / 2.0))))


def mcnemar_counts(b: int, c: int, *, both_correct: int = 0, both_wrong: int = 0) -> McNemarResult:
    """McNemar's test from the discordant counts b (A only right) and c (B only right)."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = both_correct + both_wrong + b + c
    if b + c == 0:
        method, stat, p = "none", 0.0, 1.0
    elif b + c < EXACT_BELOW:
        method, stat, p = "exact-binomial", float(min(b, c)), binomial_two_sided_p(b, c)
    else:
        method = "chi2-cc"
        stat, p = chi2_cc_p(b, c)
    return McNemarResult(n=n, both_correct=both_correct, a_only=b, b_only=c,
                         both_wrong=both_wrong, method=method, statistic=stat, p_value=p)


def mcnemar(pred_a: Sequence[int], pred_b: Sequence[int], labels: Sequence[int]) -> McNemarResult:
    """McNemar's test on the paired predictions of two models over the same labelled images."""
    a = np.asarray(pred_a)
    b = np.asarray(pred_b)
    y = np.asarray(labels)
    if not (a.shape == b.shape == y.shape) or a.ndim != 1:
        raise ValueError(f"predictions and labels must be 1-D of one length, got "
                         f"{a.shape}, {b.shape}, {y.shape}")
    ra, rb = a == y, b == y
    return mcnemar_counts(
        int(np.sum(ra & ~rb)), int(np.sum(~ra & rb)),
        both_correct=int(np.sum(ra & rb)), both_wrong=int(np.sum(~ra & ~rb)),
    )


def _bootstrap_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(resamples, dtype=np.float64)
    n = x.size
    for start in range(0, resamples, _BOOTSTRAP_CHUNK):
        stop = min(resamples, start + _BOOTSTRAP_CHUNK)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.median(x[idx], axis=1)
    return out


def _check_sample(samples: Sequence[float], name: str = "samples") -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} has non-finite values")
    return x


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    _z(confidence)  # validates
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def bootstrap_median_interval(
    samples: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval (low, high) for the median of `samples`.

    Resamples with replacement `resamples` times using numpy's PCG64 seeded with `seed`, so
    the same latencies always give the same interval.
    """
    x = _check_sample(samples)
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    meds = _bootstrap_medians(x, resamples, np.random.default_rng(seed))
    return _percentiles(meds, confidence)


def bootstrap_ratio_interval(
    numerator: Sequence[float], denominator: Sequence[float], *, confidence: float = 0.95,
    resamples: int = 2000, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for median(numerator) / median(denominator).

    The two samples are resampled independently (they are separate timing runs).
    """
    x = _check_sample(numerator, "numerator")
    y = _check_sample(denominator, "denominator")
    rng = np.random.default_rng(seed)
    mx = _bootstrap_medians(x, resamples, rng)
    my = _bootstrap_medians(y, resamples, rng)
    if np.any(my == 0):
        raise ValueError("a bootstrap median of the denominator is zero")
    return _percentiles(mx / my, confidence)


def class_counts(predictions: Sequence[int], labels: Sequence[int], classes: int = 10
                 ) -> list[tuple[int, int]]:
    """(correct, total) per class 0..classes-1."""
    p = np.asarray(predictions)
    y = np.asarray(labels)
    out: list[tuple[int, int]] = []
    for k in range(classes):
        mask = y == k
        out.append((int(np.sum(p[mask] == k)), int(np.sum(mask))))
    return out
