"""Aggregation entrypoint: summarises the peak over all seeds of a study."""

from __future__ import annotations

import numpy as np


def peak_summary(outputs: list[dict]) -> dict:
    """Mean and spread of the epidemic peak (and its timing) over seeds.

    ``outputs`` are the dicts returned by :func:`sir.model.simulate`, one per seed.
    """
    if not outputs:
        raise ValueError("peak_summary needs at least one simulation output, got none")
    peaks = np.array([o["peak_infected"] for o in outputs], dtype=float)
    days = np.array([o["peak_day"] for o in outputs], dtype=float)
    attack = np.array([o["attack_rate"] for o in outputs], dtype=float)
    p05, p50, p95 = np.percentile(peaks, [5, 50, 95])
    return {
        "sims": len(outputs),
        "peak_mean": round(float(peaks.mean()), 1),
        "peak_std": round(float(peaks.std(ddof=1)) if len(peaks) > 1 else 0.0, 1),
        "peak_p05": round(float(p05), 1),
        "peak_median": round(float(p50), 1),
        "peak_p95": round(float(p95), 1),
        "peak_day_mean": round(float(days.mean()), 1),
        "attack_rate_mean": round(float(attack.mean()), 4),
        # an early stochastic die-out never becomes an epidemic: count them apart
        "died_out": int((attack < 0.05).sum()),
    }


def by_set(sets: list[dict]) -> dict:
    """Across the sets of a grid: which set peaks highest and which lowest (by mean peak).

    ``sets`` holds one dict per parameter set: ``set_id``, ``label``, ``params``, ``runs``,
    ``failed`` and ``aggregate`` (that set's :func:`peak_summary`).
    """
    if not sets:
        raise ValueError("by_set needs at least one set's summary, got none")
    ranked = sorted(sets, key=lambda s: s["aggregate"]["peak_mean"])
    show = lambda s: ", ".join(f"{k}={v}" for k, v in sorted(s["params"].items())
                               if k in ("beta", "gamma"))
    return {
        "sets": len(sets),
        "highest_peak": f"{show(ranked[-1])} (mean {ranked[-1]['aggregate']['peak_mean']})",
        "lowest_peak": f"{show(ranked[0])} (mean {ranked[0]['aggregate']['peak_mean']})",
        "runs": sum(s["runs"] for s in sets),
    }
