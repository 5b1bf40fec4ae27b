"""Statistics that match the design of the evaluation (METHOD.md §2.5): every method answers the same prompts, and a
method may be trained with several seeds.

* :func:`wilson_interval` — the interval of a rate (a share of 0/1 outcomes). Unlike a percentile bootstrap it is
  never zero-width: 8 refusals out of 8 give [0.68, 1], not [1, 1].
* :func:`paired_bootstrap_difference` — the difference of two methods' rates on the same prompts, with an interval
  from resampling the *prompts* (both methods' answers to a resampled prompt stay together).
* :func:`mcnemar_exact` — the exact McNemar test: under "no difference" a prompt on which the two methods disagree
  is equally likely to go either way, so the discordant counts b and c are Binomial(b + c, 1/2).
* :func:`seed_summary` — mean ± sd over training seeds and a t interval over the seed means.
* :func:`paired_comparison` — the above over seeds: the difference is the mean over seeds of each seed's paired
  difference; its interval comes from a two-level bootstrap (resample seeds, then prompts within each drawn seed),
  so it includes the variance between training runs as well as between prompts.

All functions are pure; the bootstraps are seeded, so the same inputs always give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PairedComparison", "SeedSummary", "aligned_outcomes", "is_binary", "mcnemar_exact",
           "paired_bootstrap_difference", "paired_comparison", "seed_summary", "wilson_interval"]


def _z(confidence: float) -> float:
    from statistics import NormalDist

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def is_binary(values: Sequence[float | None]) -> bool:
    """Whether every known value is 0 or 1 (a rate's outcomes), and there is at least one."""
    known = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(known) and all(v in (0, 1) for v in known)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a rate p̂ = successes / n:

    (p̂ + z²/2n ± z·√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n), z the normal quantile of the confidence.

    ``n = 0`` gives (nan, nan): no outcome, no interval.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return math.nan, math.nan
    z = _z(confidence)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denominator
    # Round-off can put an end a hair outside [0, 1] (or past p̂ at 0 or n successes).
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (only A succeeds) and c (only B succeeds):

    p = min(1, 2 · Σ_{i ≤ min(b, c)} C(b + c, i) / 2^(b + c)); no discordant pair gives p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must not be negative, got {b} and {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2.0 * tail / 2.0 ** n)


def _pairs(a: Sequence[float | None], b: Sequence[float | None]) -> tuple[list[float], list[float]]:
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    kept = [(float(x), float(y)) for x, y in zip(a, b, strict=True)
            if x is not None and y is not None and not math.isnan(x) and not math.isnan(y)]
    return [x for x, _ in kept], [y for _, y in kept]


def paired_bootstrap_difference(a: Sequence[float | None], b: Sequence[float | None], *, n_resamples: int = 2000,
                                confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean(a − b), low, high): the paired difference of two methods on the same prompts, a[i] and b[i] being their
    outcomes on prompt i, with a percentile bootstrap interval over prompts. A pair with a missing side is left out.
    """
    return paired_comparison([a], [b], n_resamples=n_resamples, confidence=confidence, seed=seed).interval


@dataclass(frozen=True)
class PairedComparison:
    """A − B over seeds: ``difference`` (mean over seeds of the per-seed paired mean difference), its interval,
    the McNemar p-value on the discordant pairs pooled over seeds (0/1 outcomes only; None otherwise), the pair
    count and the discordant counts (b: only A succeeds, c: only B succeeds)."""

    difference: float
    low: float
    high: float
    p_value: float | None
    n_pairs: int
    n_seeds: int
    only_a: int
    only_b: int

    @property
    def interval(self) -> tuple[float, float, float]:
        return self.difference, self.low, self.high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_comparison(a_by_seed: Sequence[Sequence[float | None]], b_by_seed: Sequence[Sequence[float | None]], *,
                      n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Compare method A with method B, both evaluated per training seed on the same prompts.

    ``a_by_seed[s][i]`` and ``b_by_seed[s][i]`` are the outcomes of seed s on prompt i. The difference is
    (1/S) Σ_s mean_i (a_si − b_si). Its interval is a two-level percentile bootstrap: draw S seeds with replacement,
    then within each drawn seed its prompts with replacement (one index set for both methods, so pairs stay pairs).
    With one seed this is the ordinary paired bootstrap. The p-value is the exact McNemar test on the discordant
    pairs pooled over seeds (each seed–prompt pair counted once), defined for 0/1 outcomes only.
    """
    import numpy as np

    if len(a_by_seed) != len(b_by_seed) or not a_by_seed:
        raise ValueError(f"need the same positive number of seeds for both methods, got {len(a_by_seed)} and "
                         f"{len(b_by_seed)}")
    seeds = [_pairs(a, b) for a, b in zip(a_by_seed, b_by_seed, strict=True)]
    seeds = [(np.asarray(a), np.asarray(b)) for a, b in seeds if a]
    if not seeds:
        return PairedComparison(math.nan, math.nan, math.nan, None, 0, 0, 0, 0)
    diffs = [a - b for a, b in seeds]
    difference = float(np.mean([d.mean() for d in diffs]))
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    varies = any(np.any(d != d[0]) for d in diffs) or len({float(d.mean()) for d in diffs}) > 1
    if n_resamples > 0 and varies:
        rng = np.random.default_rng(seed)
        means = np.empty(n_resamples)
        for r in range(means.size):
            drawn = rng.integers(0, len(diffs), size=len(diffs))
            means[r] = np.mean([diffs[s][rng.integers(0, diffs[s].size, size=diffs[s].size)].mean() for s in drawn])
        low, high = (float(x) for x in np.quantile(means, [alpha, 1.0 - alpha]))
    else:  # every pair has the same difference: nothing varies under resampling
        low = high = difference
    binary = all(is_binary(list(a)) and is_binary(list(b)) for a, b in seeds)
    only_a = sum(int(np.sum((a == 1) & (b == 0))) for a, b in seeds)
    only_b = sum(int(np.sum((a == 0) & (b == 1))) for a, b in seeds)
    return PairedComparison(difference=difference, low=min(low, difference), high=max(high, difference),
                            p_value=mcnemar_exact(only_a, only_b) if binary else None,
                            n_pairs=sum(a.size for a, _ in seeds), n_seeds=len(seeds),
                            only_a=only_a if binary else 0, only_b=only_b if binary else 0)


@dataclass(frozen=True)
class SeedSummary:
    """A metric over training seeds: mean, sample sd (ddof 1; 0 for one seed), a t interval over the seed means
    (mean ± t_{S−1} · sd / √S; the mean itself for one seed: no seed variance can be estimated) and the seed count."""

    mean: float
    sd: float
    low: float
    high: float
    n_seeds: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_summary(values: Sequence[float | None], confidence: float = 0.95) -> SeedSummary:
    """Mean ± sd of one metric over seeds, with a t interval that carries the variance between training runs."""
    known = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not known:
        return SeedSummary(math.nan, math.nan, math.nan, math.nan, 0)
    n = len(known)
    mean = sum(known) / n
    if n == 1:
        return SeedSummary(mean, 0.0, mean, mean, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in known) / (n - 1))
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    return SeedSummary(mean, sd, mean - half, mean + half, n)


def aligned_outcomes(a: Mapping[str, float | None], b: Mapping[str, float | None]) -> tuple[list, list]:
    """Two methods' outcomes keyed by prompt id, restricted to the prompts both answered, in a fixed order."""
    shared = sorted(set(a) & set(b))
    return [a[k] for k in shared], [b[k] for k in shared]
