"""A pandas model reading a CSV shipped in its bundle."""

from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data" / "contacts.csv"


def simulate(params, seed):
    df = pd.read_csv(DATA)
    sample = df.sample(n=params.get("rows", 5), random_state=seed)
    by_group = sample.groupby("group")["contacts"].sum()
    return {"rows": sample["id"].to_numpy(), "contacts": sample["contacts"].sum(),
            "mean": sample["contacts"].mean(), "groups": sorted(by_group.index.tolist())}
