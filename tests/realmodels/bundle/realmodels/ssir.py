"""Starsim's SIR on a random network: numba @njit(cache=True) inside starsim, scipy, pandas."""

import numpy as np
import starsim as ss


def simulate(params, seed):
    sim = ss.Sim(n_agents=params.get("agents", 500), rand_seed=seed, start=2000,
                 stop=2000 + params.get("years", 10), verbose=0,
                 diseases=ss.SIR(beta=params.get("beta", 0.1), init_prev=0.05),
                 networks=ss.RandomNet(n_contacts=4))
    sim.run()
    infected = np.asarray(sim.results.sir.n_infected, dtype=float)
    return {"infected": infected, "peak": infected.max(), "final": np.int64(infected[-1])}
