"""Ray's side of bench/steady.py, run by the bench-only Ray venv's Python (not ours).

Reads one command per stdin line and answers one JSON line on stdout, so that steady.py
interleaves Ray's rounds with modelops' (side by side, round by round):

    sir N        N runs of the SIR example's simulate (one Ray task each) → seconds, digest
    noop N       N no-op tasks → seconds
    quit

argv: CPUS PARAMS_JSON TEMP_DIR (Ray's session files: inside the benchmark's workspace). The SIR bundle directory is on PYTHONPATH (its numpy is the Ray
venv's). Workers are plain Ray worker processes, reused between tasks (Ray's default).
"""

import hashlib
import json
import sys
import time

import ray


def main() -> int:
    cpus, params, temp = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _temp_dir=temp)

    @ray.remote
    def sim(p, seed):
        from sir.model import simulate
        return simulate(p, seed)

    @ray.remote
    def noop(p, seed):
        return {}

    print(json.dumps({"ready": True, "ray": ray.__version__}), flush=True)
    for line in sys.stdin:
        op, _, arg = line.strip().partition(" ")
        if op == "quit":
            break
        n = int(arg)
        t0 = time.perf_counter()
        if op == "sir":
            out = ray.get([sim.remote(params, s) for s in range(n)])
            seconds = time.perf_counter() - t0
            digest = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()
            print(json.dumps({"seconds": seconds, "digest": digest}), flush=True)
        else:
            ray.get([noop.remote({}, s) for s in range(n)])
            print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
