"""Chain-binomial SIR, like runtime/examples/sir, on the stdlib RNG so it stays cheap.

Extra params for the tests: ``sleep_s`` (make each sim take a while, so a worker can be
killed mid-study) and ``fail_seed`` (that seed raises, to test failures).
"""

from __future__ import annotations

import random
import time

import sirsteps


def simulate(params: dict, seed: int) -> dict:
    p = dict(params)
    if p.pop("fail_seed", None) == seed:
        raise RuntimeError(f"seed {seed} fails on purpose")
    time.sleep(float(p.pop("sleep_s", 0) or 0))
    rng = random.Random(seed)
    n, infected = int(p["population"]), int(p["initial_infected"])
    susceptible, peak, peak_day = n - infected, infected, 0
    for day in range(1, int(p["days"]) + 1):
        susceptible, infected = sirsteps.step(susceptible, infected, n, float(p["beta"]),
                                              float(p["gamma"]), rng)
        if infected > peak:
            peak, peak_day = infected, day
        if infected == 0:
            break
    return {"peak_infected": peak, "peak_day": peak_day,
            "attack_rate": (n - susceptible) / n, "sirsteps": sirsteps.VERSION}
