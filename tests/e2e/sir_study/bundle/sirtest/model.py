"""Chain-binomial SIR, like runtime/examples/sir, on the stdlib RNG so it stays cheap.

Extra params for the tests: ``sleep_s`` (make each sim take a while, so a worker can be
killed mid-study), ``fail_seed`` (that seed raises, to test failures), ``fail_every: N``
(every seed divisible by N raises) and ``nan_every: N`` (every seed divisible by N gives
NaN and infinite outputs, as a model dividing by zero on numpy would).
"""

from __future__ import annotations

import math
import random
import time

import sirsteps


def simulate(params: dict, seed: int) -> dict:
    p = dict(params)
    fail_every, nan_every = int(p.pop("fail_every", 0) or 0), int(p.pop("nan_every", 0) or 0)
    if p.pop("fail_seed", None) == seed or (fail_every and seed % fail_every == 0):
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
    out = {"peak_infected": peak, "peak_day": peak_day,
           "attack_rate": (n - susceptible) / n, "sirsteps": sirsteps.VERSION}
    if nan_every and seed % nan_every == 0:
        out.update(attack_rate=math.nan, growth=[math.inf, -math.inf, math.nan])
    return out
