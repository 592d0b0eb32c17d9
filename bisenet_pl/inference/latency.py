"""One latency summary for everything we time (benchmark, video, the GPU check, the serving load test):
per-call times in seconds in, percentiles in milliseconds out, with one set of key names."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, min and mean of per-call times, in milliseconds (numpy's linear percentiles);
    NaN for no times."""
    if len(seconds) == 0:
        return dict.fromkeys(("p50", "p90", "p99", "min", "mean"), float("nan"))
    ms = 1000.0 * np.asarray(seconds, dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "min": float(ms.min()), "mean": float(ms.mean())}


__all__ = ["latency_ms"]
