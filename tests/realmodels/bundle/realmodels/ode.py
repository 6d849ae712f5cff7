"""An SIR ODE solved by scipy (solve_ivp), its rates drawn from the seed."""

import numpy as np
from scipy.integrate import solve_ivp


def _sir(t, y, beta, gamma):
    s, i, r = y
    return [-beta * s * i, beta * s * i - gamma * i, gamma * i]


def simulate(params, seed):
    rng = np.random.default_rng(seed)
    beta = params.get("beta", 0.3) * rng.uniform(0.8, 1.2)
    gamma = params.get("gamma", 0.1) * rng.uniform(0.8, 1.2)
    days = np.linspace(0, params.get("days", 100), 101)
    sol = solve_ivp(_sir, (0, days[-1]), [0.99, 0.01, 0.0], t_eval=days, args=(beta, gamma),
                    rtol=1e-8, atol=1e-10)
    return {"infected": sol.y[1], "peak_day": days[np.argmax(sol.y[1])], "beta": beta}
