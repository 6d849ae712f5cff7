"""Mean and spread of the peak over seeds."""

from __future__ import annotations

import statistics


def peak_summary(outputs: list[dict]) -> dict:
    peaks = [o["peak_infected"] for o in outputs]
    return {"sims": len(peaks), "peak_mean": statistics.fmean(peaks),
            "peak_std": statistics.stdev(peaks) if len(peaks) > 1 else 0.0,
            "sirsteps": sorted({o["sirsteps"] for o in outputs})}
