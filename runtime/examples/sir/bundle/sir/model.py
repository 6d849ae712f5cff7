"""Chain-binomial SIR model: each day every susceptible is infected with probability
1 - exp(-beta * I / N) and every infected recovers with probability 1 - exp(-gamma).

Stochastic and seeded: the same (params, seed) always gives the same outputs, whichever
worker, process or executor runs it. That is what makes a state or threading bug visible:
a result that changes with the execution mode is a bug.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULTS = {
    "population": 10_000,    # N
    "initial_infected": 10,  # I at day 0
    "beta": 0.3,             # transmission rate per day
    "gamma": 0.1,            # recovery rate per day (mean infectious period 1/gamma days)
    "days": 200,             # simulated horizon
}


def _params(params: dict) -> dict:
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown SIR parameter(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    if not 0 < p["initial_infected"] <= p["population"]:
        raise ValueError("initial_infected must be between 1 and population, "
                         f"got {p['initial_infected']} of {p['population']}")
    if p["beta"] < 0 or p["gamma"] < 0 or p["days"] < 1:
        raise ValueError("beta and gamma must be >= 0 and days >= 1")
    return p


def simulate(params: dict, seed: int) -> dict:
    """One seeded epidemic; returns its peak, peak day and final size."""
    p = _params(params)
    rng = np.random.default_rng(seed)
    n = int(p["population"])
    infected = int(p["initial_infected"])
    susceptible, recovered = n - infected, 0
    p_recover = 1.0 - math.exp(-float(p["gamma"]))
    peak, peak_day = infected, 0
    for day in range(1, int(p["days"]) + 1):
        p_infect = 1.0 - math.exp(-float(p["beta"]) * infected / n)
        new_infected = int(rng.binomial(susceptible, p_infect))
        new_recovered = int(rng.binomial(infected, p_recover))
        susceptible -= new_infected
        infected += new_infected - new_recovered
        recovered += new_recovered
        if infected > peak:
            peak, peak_day = infected, day
        if infected == 0:
            break
    return {
        "peak_infected": peak,
        "peak_day": peak_day,
        "final_size": n - susceptible,
        "attack_rate": (n - susceptible) / n,
    }
