"""Small, pure metric functions for the evaluation stage (METHOD.md §2.5).

Every rate the evaluation reports is the mean of per-response values (0/1 for refusal, compliance or correctness,
a score in [0, 1] for graded judges) with a percentile bootstrap interval, overall and per category. The bootstrap is
seeded so that the same responses always give the same interval.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Hashable, Sequence

__all__ = ["bootstrap_ci", "normalize_answer_tokens", "per_category", "qa_correct"]

NAN_TRIPLE = (math.nan, math.nan, math.nan)


def _finite(values: Sequence[float | None]) -> list[float]:
    # A judge that cannot score a response gives None (or NaN); such responses are left out of the mean rather than
    # counted as 0, and the caller reports how many were left out.
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def bootstrap_ci(values: Sequence[float | None], *, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean and a percentile bootstrap interval of the mean.

    ``values`` with no finite entry give a NaN triple; one value gives a zero-width interval. The resamples come from
    ``numpy.random.default_rng(seed)``, so the interval is a deterministic function of (values, n_resamples, seed).
    """
    import numpy as np

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    data = np.asarray(_finite(values), dtype=np.float64)
    if data.size == 0:
        return NAN_TRIPLE
    mean = float(data.mean())
    if data.size == 1 or n_resamples <= 0 or np.all(data == data[0]):
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    # Resample in chunks so that a large set (e.g. 10k responses x 1000 resamples) never needs one huge matrix.
    means = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // data.size)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        index = rng.integers(0, data.size, size=(stop - start, data.size))
        means[start:stop] = data[index].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    # The quantiles of resampled means always bracket the mean in practice; clamp guards float round-off.
    return mean, float(min(low, mean)), float(max(high, mean))


def per_category(values: Sequence[float | None], categories: Sequence[Hashable], *, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0, wilson_for_rates: bool = False,
                 ) -> dict[Hashable, tuple[float, float, float, int]]:
    """{category: (mean, low, high, n)} in order of first appearance; ``n`` counts the values that entered the mean.

    With ``wilson_for_rates`` a category whose values are all 0/1 gets the Wilson interval of its rate (never
    zero-width: 8 of 8 gives [0.68, 1]) instead of the bootstrap one (which reads [1, 1] whenever all values agree).
    """
    if len(values) != len(categories):
        raise ValueError(f"{len(values)} values but {len(categories)} categories")
    groups: dict[Hashable, list[float | None]] = {}
    for value, category in zip(values, categories, strict=True):
        groups.setdefault(category, []).append(value)
    out: dict[Hashable, tuple[float, float, float, int]] = {}
    for category, group in groups.items():
        mean, low, high = bootstrap_ci(group, n_resamples=n_resamples, confidence=confidence, seed=seed)
        n = len(_finite(group))
        if wilson_for_rates and n and all(v in (0.0, 1.0) for v in _finite(group)):
            from drirl.eval.stats import wilson_interval

            low, high = wilson_interval(int(round(mean * n)), n, confidence)
        out[category] = (mean, low, high, n)
    return out


# ---------------------------------------------------------------------------------------------------------------
# QA answer matching
# ---------------------------------------------------------------------------------------------------------------

# A token is a run of letters/digits; a decimal point between digits stays inside the token so that "12" does not
# match "12.5", while a full stop after a word ("Paris.") or inside an abbreviation ("D.C.") splits.
_TOKEN = re.compile(r"[^\W_]+(?:\.(?=\d)[^\W_]+)*")
# Thousands separators are dropped so "1,000" and "1000" agree.
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def normalize_answer_tokens(text: str) -> list[str]:
    """Lower-cased, accent-free word/number tokens with punctuation removed ("São-Paulo!" -> ["sao", "paulo"])."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    return _TOKEN.findall(_THOUSANDS.sub("", text))


def qa_correct(response: str, answers: Sequence[str]) -> bool:
    """Whether any alias appears in the response as whole words (case, accents and punctuation ignored).

    Matching is on token sequences, so "12" does not match "112" or "12.5", and "New York" needs both words in a row.
    """
    tokens = normalize_answer_tokens(response or "")
    if not tokens:
        return False
    for alias in answers:
        target = normalize_answer_tokens(str(alias))
        if not target:
            continue
        width = len(target)
        if any(tokens[i:i + width] == target for i in range(len(tokens) - width + 1)):
            return True
    return False
