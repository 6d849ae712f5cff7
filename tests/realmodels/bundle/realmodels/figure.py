"""A matplotlib model: draws its epidemic curve and saves the figure next to itself (its
working directory); the PNG's bytes are one of its outputs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def simulate(params, seed):
    rng = np.random.default_rng(seed)
    curve = np.cumsum(rng.poisson(params.get("rate", 3.0), size=50))
    fig, ax = plt.subplots(figsize=(3, 2), dpi=50)
    ax.plot(curve)
    ax.set_title(f"seed {seed}")
    fig.savefig("curve.png", metadata={"Software": None})
    plt.close(fig)
    with open("curve.png", "rb") as f:
        png = f.read()
    return {"png": png, "total": curve[-1]}
