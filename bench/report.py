"""bench/results.md from one run's results: the machine, the targets (met or not, with
a miss explained by the measured numbers), and one table per benchmark."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from common import mb, ms

R = dict[str, Any]


@dataclass(frozen=True)
class Target:
    name: str
    section: str
    goal: str
    measure: Callable[[R], tuple[float, str]]   # (value, how it was computed)
    met: Callable[[float], bool]
    note: Callable[[R], str] | None = None       # why, when missed


def _median(r: R, section: str, case: str) -> float:
    return r[section][case]["median_s"]


def _warm_vs_ppe(r: R) -> tuple[float, str]:
    warm, ppe = _median(r, "overhead", "warm hit"), _median(r, "overhead", "ProcessPoolExecutor(1)")
    return warm / ppe, f"{ms(warm)} / {ms(ppe)}"


def _fresh_vs_pass(r: R) -> tuple[float, str]:
    fresh = _median(r, "overhead", "fresh process")
    bare = _median(r, "overhead", "bare python -c pass")
    return fresh / bare, f"{ms(fresh)} / {ms(bare)}"


def _fresh_note(r: R) -> str:
    """The measured phases of a fresh-process task, against a bare interpreter's life."""
    parts = r["overhead"]["fresh process breakdown"]
    bare = _median(r, "overhead", "bare python -c pass")
    return (f"A fresh process's task = spawn until the runner's hello {ms(parts['spawn_s'])} + "
            f"task {ms(parts['task_s'])} + retirement {ms(parts['retire_s'])}, against "
            f"{ms(bare)} for a bare interpreter's whole life.")


def _uv_vs_pip(r: R) -> tuple[float, str]:
    uv, pip = _median(r, "venv", "uv (warm cache)"), _median(r, "venv", "venv + pip")
    return pip / uv, f"{ms(pip)} / {ms(uv)}"


def _cache_hit(r: R) -> tuple[float, str]:
    hit = _median(r, "venv", "cache hit")
    return hit * 1e3, ms(hit)


def _e2e(r: R) -> tuple[float, str]:
    e = r["e2e"]
    warm = e["prod-warm (modelops submit)"]["median_s"]
    plain = e["plain client.map"]["median_s"]
    return plain / warm, f"plain {ms(plain)} / prod-warm {ms(warm)} wall time"


def _e2e_note(r: R) -> str:
    e = r["e2e"]
    warm = e["prod-warm (modelops submit)"]["per_task_s"]
    plain = e["plain client.map"]["per_task_s"]
    return (f"per task {ms(warm)} through the runtime vs {ms(plain)} plain: the difference "
            f"({ms(warm - plain)}) is the runtime's share per task (SimTask/SimResult models, "
            "the warm-process round trip); on this machine the scheduler, "
            f"{e['worker_processes']} worker processes and their warm processes share the cores.")


def _rss(r: R) -> tuple[float, str]:
    m = r["memory"]
    extra = m["warm_rss_bytes"] - m["bare_rss_bytes"]
    return extra / 1e6, f"{mb(m['warm_rss_bytes'])} − {mb(m['bare_rss_bytes'])}"


def _guarded(fn: Callable[[R], tuple[float, str]]) -> Callable[[R], tuple[float, str]]:
    """A case of bench/fast.py that failed is a miss saying why, not a crash of the report."""
    def measure(r: R) -> tuple[float, str]:
        try:
            return fn(r)
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            errors = [f"{k}: {v['error']}" for k, v in r.get("fast", {}).items()
                      if isinstance(v, dict) and "error" in v]
            return float("nan"), "; ".join(errors) or f"not measured ({exc!r})"
    return measure


def _sir_local(mode: str, against: str = "prod-warm") -> Callable[[R], tuple[float, str]]:
    """The study alone (the `elapsed` line) of ``mode`` against ``against``; the whole
    command's ratio stays reported beside it."""
    def measure(r: R) -> tuple[float, str]:
        s = r["fast"]["sir_local"]
        other, base = s[mode], s[against]
        return other["study_s"] / base["study_s"], (
            f"the study alone {ms(other['study_s'])} / {ms(base['study_s'])}; whole command "
            f"{ms(other['command_s'])} / {ms(base['command_s'])} = "
            f"{other['command_s'] / base['command_s']:.2f}×; Dask tasks "
            f"{other.get('dask_tasks', '?')} / {base.get('dask_tasks', '?')}"
            + (_floor_note(r["fast"].get("fork_floor", {}), s) if mode == "fresh-process"
               else ""))
    return measure


def _floor_note(f: R, local: R) -> str:
    """Where fresh-process stands against a bare fork per sim (fork floor, if measured):
    the study alone if fresh-process cost exactly the floor per sim (its study minus what
    is ours above the floor, spread over the machine's cores: the runs are CPU-bound)."""
    if "floor" not in f:
        return ""
    sims, cores = local["sims"], os.cpu_count() or 1
    at_floor = local["fresh-process"]["study_s"] - sims * f["above_floor_s"] / cores
    return (f"; CPU per sim at the executor: fresh-process "
            f"{ms(f['fresh-process']['cpu_per_sim_s'])}, bare fork floor "
            f"{ms(f['floor']['cpu_per_sim_s'])}, prod-warm {ms(f['prod-warm']['cpu_per_sim_s'])}: "
            f"at the floor the study would take ≈ {ms(max(at_floor, 0.0))} = "
            f"{max(at_floor, 0.0) / local['prod-warm']['study_s']:.2f}× prod-warm")


def _template_overhead(r: R) -> tuple[float, str]:
    h = r["fast"]["heavy_import"]
    return h["overhead_s"] * 1e3, (
        f"{ms(h['fresh process from the template']['median_s'])} − "
        f"{ms(h['warm hit']['median_s'])} (exec: {ms(h['fresh process by exec']['median_s'])})")


def _batched(r: R) -> tuple[float, str]:
    b = r["fast"]["batched"]["noop"]
    return b["plain client.map"] / b["batched"], (
        f"plain {ms(b['plain client.map'])} / batched {ms(b['batched'])} wall time")


def _busy(r: R) -> tuple[float, str]:
    b = r["fast"]["batched"]
    limit = b["cores"] * 50
    return b["busy"]["sims_per_s"] / limit, f"{b['busy']['sims_per_s']:.0f} sims/s / {limit}"


def _steady_ray(case: str) -> Callable[[R], tuple[float, str]]:
    def measure(r: R) -> tuple[float, str]:
        st = r["steady"]
        if "error" in st:
            return float("nan"), st["error"]
        best = st["best"]
        if f"ray {case}" not in best:
            return float("nan"), st.get("ray_install", "Ray not measured")
        ours = best["sir" if case == "sir" else "noop auto"]
        return ours / best[f"ray {case}"], (f"{ms(ours)} / Ray {st.get('ray_version', '')} "
                                            f"{ms(best[f'ray {case}'])}")
    return measure


def _steady_unbatched(r: R) -> tuple[float, str]:
    st = r["steady"]
    if "error" in st:
        return float("nan"), st["error"]
    wall = st["best"]["noop batch=1"]
    return wall / st["noops"] * 1e3, f"{ms(wall)} / {st['noops']:,} runs, {st['slots']} threads"


def _steady_note(r: R) -> str:
    st = r["steady"]
    if "cpu_per_run" not in st:
        return ""
    c = st["cpu_per_run"]["noop batch=1"]
    parts = ", ".join(f"{k} {ms(v['user_s'] + v['system_s'])}" for k, v in c.items())
    total = sum(v["user_s"] + v["system_s"] for v in c.values())
    plain = st["cpu_per_run"].get("plain client.map (Dask alone)", {})
    floor = sum(v["user_s"] + v["system_s"] for v in plain.values())
    return (f"CPU per unbatched run: {parts} = {ms(total)} on {st.get('cores', 2)} cores "
            f"shared with the rest of the machine (load {st['load_at_start'][0]:.1f} at "
            f"start); plain `client.map` of the same no-op (Dask alone) costs {ms(floor)} of "
            f"CPU and {ms(st['best']['plain client.map (Dask alone)'] / st['noops'])} of wall "
            "time per task here: Dask's own scheduler and worker task handling is the floor "
            "of an unbatched run, and batching (the default) pays it once per batch.")


TARGETS = [
    Target("warm hit ≤ 1.0× ProcessPoolExecutor(1) round trip", "overhead", "≤ 1.0×",
           _warm_vs_ppe, lambda v: v <= 1.0),
    Target("fresh process ≤ 1.5× bare `python -c pass` in the venv", "overhead", "≤ 1.5×",
           _fresh_vs_pass, lambda v: v <= 1.5, _fresh_note),
    Target("uv from a warm cache ≥ 15× faster than venv + pip", "venv", "≥ 15×",
           _uv_vs_pip, lambda v: v >= 15),
    Target("venv cache hit ≤ 5 ms", "venv", "≤ 5 ms", _cache_hit, lambda v: v <= 5),
    Target("prod-warm end to end ≥ 0.5× plain client.map", "e2e", "≥ 0.5×", _e2e,
           lambda v: v >= 0.5, _e2e_note),
    Target("idle warm process RSS ≤ bare interpreter + 10 MB", "memory", "≤ +10 MB", _rss,
           lambda v: v <= 10),
    Target("SIR, 300 sims through `local`, study alone: fresh-process ≤ 2× prod-warm", "fast",
           "≤ 2×", _guarded(_sir_local("fresh-process")), lambda v: v <= 2),
    Target("SIR, 300 sims through `local`, study alone: diagnose-fresh-venv ≤ 2× "
           "fresh-process", "fast", "≤ 2×",
           _guarded(_sir_local("diagnose-fresh-venv", "fresh-process")), lambda v: v <= 2),
    Target("0.5 s import of a dependency: fresh-process per-task overhead ≤ 20 ms", "fast", "≤ 20 ms",
           _guarded(_template_overhead), lambda v: v <= 20),
    Target("10,000 no-op sims: batched ≥ 5× plain client.map", "fast", "≥ 5×",
           _guarded(_batched), lambda v: v >= 5),
    Target("1,000 × 20 ms sims ≥ 0.9 × cores × 50 sims/s", "fast", "≥ 0.9×",
           _guarded(_busy), lambda v: v >= 0.9),
    Target("SIR 300 sims on a warm cluster ≤ 1.0× Ray's warm repeat", "steady", "≤ 1.0×",
           _steady_ray("sir"), lambda v: v <= 1.0),
    Target("2,000 no-ops auto-batched on a warm cluster ≤ 0.8× Ray", "steady", "≤ 0.8×",
           _steady_ray("noop"), lambda v: v <= 0.8),
    Target("unbatched per-run overhead on a warm cluster ≤ 1.5 ms", "steady", "≤ 1.5 ms",
           _steady_unbatched, lambda v: v <= 1.5, _steady_note),
]


def _fmt_value(target: Target, value: float) -> str:
    if target.section == "memory":
        return f"{value:+.1f} MB"
    if "ms" in target.goal:
        return f"{value:.3f} ms"
    return f"{value:.2f}×"


def evaluate(results: R) -> list[dict[str, Any]]:
    rows = []
    for t in TARGETS:
        if t.section not in results:
            continue
        value, how = t.measure(results)
        met = t.met(value)
        rows.append({"target": t.name, "goal": t.goal, "value": value,
                     "shown": _fmt_value(t, value), "how": how, "met": met,
                     "note": None if met or t.note is None else t.note(results)})
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def build(machine: dict[str, str], results: R, *, smoke: bool, elapsed_s: float) -> str:
    """The whole page: summary (machine, targets) then one table per benchmark."""
    return ("# modelops-dask benchmarks\n\n"
            + summary(machine, results, smoke=smoke, elapsed_s=elapsed_s, level=2)
            + "\n" + details(results))


def summary(machine: dict[str, str], results: R, *, smoke: bool, elapsed_s: float,
            level: int = 2) -> str:
    """The machine and the targets, met or not (what docs/benchmarks.md shows)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines: list[str] = []
    if smoke:
        lines += ["**Smoke run** (`bench/run.py --smoke`): reduced sizes, checks that every "
                  "benchmark works; the numbers are not measurements.", ""]
    lines += [f"`make bench` (bench/run.py) on {now}, {elapsed_s:.0f} s. Every ratio compares "
              "two measurements taken side by side in this one run (cases interleaved "
              "round by round), so load from elsewhere on the machine hits both sides.", ""]
    lines += _table(["machine", ""], [[k, v] for k, v in machine.items()]) + [""]

    targets = evaluate(results)
    lines += ["#" * level + " Targets", ""]
    lines += _table(["target", "measured", "computed as", "met"],
                    [[t["target"], t["shown"], t["how"], "met" if t["met"] else "**not met**"]
                     for t in targets]) + [""]
    for t in targets:
        if t["note"]:
            lines += [f"- **{t['target']}: not met.** {t['note']}"]
    if any(t["note"] for t in targets):
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def details(results: R) -> str:
    """One table per benchmark."""
    lines: list[str] = []
    if "overhead" in results:
        o = results["overhead"]
        ppe = o["ProcessPoolExecutor(1)"]["median_s"]
        order = ["raw pipe", "warm hit", "ProcessPoolExecutor(1)", "direct",
                 "bare python -c pass", "fresh process", "fresh venv"]
        what = {
            "raw pipe": "floor: one framed pickle request/reply over two pipes",
            "warm hit": "`isolated_warm`, warm process ready (prod-warm)",
            "ProcessPoolExecutor(1)": "stdlib round trip to one worker process",
            "direct": "`direct`: in the worker process, bundle modules re-imported",
            "bare python -c pass": "a bare interpreter's whole life, in the bundle's venv",
            "fresh process": "`MAX_PROCESS_REUSE=1`: a new warm process per task",
            "fresh venv": "`FORCE_FRESH_VENV`: a new uv venv and process per task",
        }
        lines += ["## Per-task overhead of a no-op entrypoint", ""]
        lines += _table(["how the task runs", "median", "p90", "× ProcessPoolExecutor(1)", "n"],
                        [[f"{name} — {what[name]}", ms(o[name]["median_s"]),
                          ms(o[name]["p90_s"]), f"{o[name]['median_s'] / ppe:.2f}×",
                          str(o[name]["n"])] for name in order]) + [""]
        parts = o["fresh process breakdown"]
        lines += [f"Fresh process, step by step (medians): spawn until the runner's hello "
                  f"{ms(parts['spawn_s'])}, task {ms(parts['task_s'])}, retirement "
                  f"(graceful exit) {ms(parts['retire_s'])}.", ""]

    if "venv" in results:
        v = results["venv"]
        pip = v["venv + pip"]["median_s"]
        lines += ["## Venv for a bundle with real dependencies", "",
                  f"Requirements `{' '.join(v['requirements'])}`: {len(v['wheels'])} wheel(s) "
                  f"({v['wheel_bytes'] / 1e6:.1f} MB, repacked from the installed "
                  "distributions) installed offline from `--find-links`.", ""]
        rows = []
        for name in ("venv + pip", "uv (cold cache)", "uv (warm cache)",
                     "first hit in a new worker process", "cache hit"):
            med = v[name]["median_s"]
            rows.append([name, ms(med), "—" if name == "venv + pip" else f"{pip / med:,.0f}× faster",
                         str(v[name]["n"])])
        lines += _table(["venv", "median", "vs venv + pip", "n"], rows) + [""]
        lines += ["`venv + pip` is `python -m venv` + `pip install --no-index --find-links` "
                  "(pip also byte-compiles). `uv` is the runtime's own build (VenvCache: "
                  "`uv venv` + `uv pip install`, hard links from the uv cache). A cache hit "
                  "in a running worker process reads the venv's fingerprint; the first hit "
                  "in a new worker process also starts the venv's interpreter once "
                  "(MODELOPS_VALIDATE_DEPS).", ""]

    if "e2e" in results:
        e = results["e2e"]
        lines += ["## End to end", "",
                  f"{e['sims']:,} no-op sims on a local cluster from `{e['preset']}`"
                  + (f" with `--set {' '.join(e['sets'])}`" if e["sets"] else "")
                  + f" ({e['worker_processes']} worker processes × {e['threads']} thread, "
                  "started by the embedded local mode from the rendered chart), after a "
                  "warm-up; median of the rounds.", ""]
        plain = e["plain client.map"]["median_s"]
        lines += _table(["how", "wall time", "per task", "throughput vs plain", "rounds"],
                        [[name, ms(e[name]["median_s"]), ms(e[name]["per_task_s"]),
                          f"{plain / e[name]['median_s']:.2f}×", str(e[name]["n"])]
                         for name in ("prod-warm (modelops submit)", "plain client.map")])
        lines.append("")

    if "fast" in results:
        f = results["fast"]
        lines += ["## Isolation without the wait (bench/fast.py)", "",
                  f"Load average at start {tuple(round(x, 1) for x in f['load_at_start'])}, at "
                  f"end {tuple(round(x, 1) for x in f['load_at_end'])}.", ""]
        h = f.get("heavy_import", {})
        if "warm hit" in h:
            lines += _table(["0.5 s import of a dependency: how the task runs", "median", "p90", "n"],
                            [[name, ms(h[name]["median_s"]), ms(h[name]["p90_s"]),
                              str(h[name]["n"])] for name in
                             ("warm hit", "fresh process from the template",
                              "fresh process by exec")]) + [""]
        s_ = f.get("sir", {})
        if "prod-warm" in s_:
            lines += ["SIR at the executor (no Dask, no cluster: the per-sim cost of each "
                      "mode's process and venv, informative):", ""]
            lines += _table([f"SIR example, {s_['threads']} task threads", "sims", "wall",
                             "per sim"],
                            [[name, str(s_[name]["sims"]), ms(s_[name]["wall_s"]),
                              ms(s_[name]["per_sim_s"])]
                             for name in ("prod-warm", "fresh-process",
                                          "diagnose-fresh-venv")]) + [""]
        ff = f.get("fork_floor", {})
        if "floor" in ff:
            lines += ["SIR's marginal CPU per sim at the executor, one task at a time "
                      f"(CPU of {ff['big']} sims − CPU of {ff['small']}, whole process trees, "
                      f"best of {ff['rounds']} rounds, load {ff['load']:.1f}; bench/forkfloor.py). "
                      "The bare fork floor is a Python with numpy imported forking a child per "
                      "sim that imports the model from its pyc, runs it, pickles the result "
                      "into a pipe and exits: no sandbox, no protocol, no reseeding, no "
                      "Dask. What fresh-process costs above it is ours:", ""]
            lines += _table(["how each sim runs", "CPU per sim"],
                            [["prod-warm (a warm process reused)",
                              ms(ff["prod-warm"]["cpu_per_sim_s"])],
                             ["bare fork floor", ms(ff["floor"]["cpu_per_sim_s"])],
                             ["fresh-process (template, sandbox, guard, reseed)",
                              ms(ff["fresh-process"]["cpu_per_sim_s"])],
                             ["fresh-process above the floor", ms(ff["above_floor_s"])]]) + [""]
        sl = f.get("sir_local", {})
        if "prod-warm" in sl:
            prod = sl["prod-warm"]
            modes = ("prod-warm", "fresh-process", "diagnose-fresh-venv")
            lines += [f"SIR example through `modelops-runtime local`, {sl['sims']} sims per "
                      "run, best of the rounds (the targets compare the study alone, the "
                      "`elapsed` it prints; the whole command is what a user waits for, "
                      "cluster start and stop included). Dask tasks and runs per task: the "
                      "batch plan of the fastest round (docs/studies.md \"Tiny runs are "
                      "batched\"):", ""]
            lines += _table(["preset", "whole command", "× prod-warm", "study alone",
                             "× prod-warm", "Dask tasks", "runs per task"],
                            [[name, ms(sl[name]["command_s"]),
                              f"{sl[name]['command_s'] / prod['command_s']:.2f}×",
                              ms(sl[name]["study_s"]),
                              f"{sl[name]['study_s'] / prod['study_s']:.2f}×",
                              str(sl[name].get("dask_tasks", "?")),
                              str(sl[name].get("runs_per_task", "?"))]
                             for name in modes]) + [""]
            lines += [f"- {name}: batch plan {sl[name]['batch_plan']}" for name in modes
                      if sl[name].get("batch_plan")] + [""]
        b = f.get("batched", {})
        if "noop" in b:
            lines += [f"Batched (local cluster, prod-warm, {b['worker_processes']} worker "
                      f"processes): {b['sims']:,} no-op sims in {ms(b['noop']['batched'])} "
                      f"({b['noop_dask_tasks']} Dask tasks) against {ms(b['noop']['plain client.map'])} "
                      f"for plain client.map; {b['busy_sims']:,} sims of 20 ms in "
                      f"{ms(b['busy']['wall_s'])} ({b['busy']['sims_per_s']:.0f} sims/s, "
                      f"{b['busy']['dask_tasks']} Dask tasks, {b['cores']} cores).", ""]
        for name, v in f.items():
            if isinstance(v, dict) and "error" in v:
                lines += [f"{name}: failed: {v['error']}", ""]

    if "steady" in results:
        lines += steady_details(results["steady"])

    if "memory" in results:
        m = results["memory"]
        lines += ["## Idle memory", ""]
        lines += _table(["process", "RSS"], [
            ["idle warm process (after 20 tasks)", mb(m["warm_rss_bytes"])],
            [f"bare interpreter of the same venv importing the same {m['modules']} modules",
             mb(m["bare_rss_bytes"])],
            ["difference", f"{(m['warm_rss_bytes'] - m['bare_rss_bytes']) / 1e6:+.1f} MB"],
        ]) + [""]
    return "\n".join(lines).rstrip() + "\n"


def steady_details(st: R) -> list[str]:
    """bench/steady.py: the second study on a warm cluster, Ray beside it, where time goes."""
    lines = ["## Steady state: a second study on a warm cluster (bench/steady.py)", ""]
    if "error" in st:
        return lines + [f"failed: {st['error']}", ""]
    lines += [f"A cluster from `values-examples/prod-warm.yaml` kept up by `modelops-runtime "
              f"local up` ({st['slots']} threads), warmed by a first study; best of "
              f"{st['rounds']} rounds, each case interleaved with Ray's "
              f"({st.get('ray_install', '')}). Load average at start "
              f"{tuple(round(x, 1) for x in st['load_at_start'])}, at end "
              f"{tuple(round(x, 1) for x in st['load_at_end'])}.", ""]
    best = st["best"]
    rows = [[f"SIR {st['sims']} sims (auto-batched)", ms(best["sir"]),
             ms(best["ray sir"]) if "ray sir" in best else "—"],
            [f"{st['noops']:,} no-ops, auto-batched", ms(best["noop auto"]),
             ms(best["ray noop"]) if "ray noop" in best else "—"],
            [f"{st['noops']:,} no-ops, unbatched (`batch=1`)", ms(best["noop batch=1"]),
             "—"],
            [f"{st['noops']:,} no-ops, plain `client.map` (Dask alone, no modelops)",
             ms(best["plain client.map (Dask alone)"]), "—"],
            [f"`local run --study runtime/examples/sir --sims {st['sims']}` (whole command)",
             ms(best["local run (whole command)"]), "—"],
            [f"SIR {st['sims']} sims, first study after start",
             ms(st["modelops_first_batch_s"]),
             ms(st["ray_first_batch_s"]) if "ray_first_batch_s" in st else "—"]]
    lines += _table(["case (the study alone unless said)", "modelops", "Ray"], rows) + [""]
    if st.get("same_outputs_as_ray") is not None:
        lines += [f"SIR outputs seed by seed equal to Ray's: {st['same_outputs_as_ray']}.", ""]
    cpu = st.get("cpu_per_run", {})
    if cpu:
        lines += ["Where the time goes, CPU per run by process (user + system; system is "
                  "mostly pipes and sockets), read from /proc around the fastest round; "
                  "`model` is the runner's own clock around the entrypoint (batched runs), "
                  "or the worker's executor call for unbatched runs:", ""]
        kinds = ["client", "scheduler", "worker", "runner"]
        rows = []
        for case, c in cpu.items():
            rows.append([case] + [f"{ms(c[k]['user_s'])} + {ms(c[k]['system_s'])}"
                                  for k in kinds]
                        + [ms(sum(c[k]["user_s"] + c[k]["system_s"] for k in kinds)),
                           ms(st["model_or_executor_s"][case])
                           if case in st["model_or_executor_s"] else "—"])
        lines += _table(["case", *kinds, "CPU total", "model (executor)"], rows) + [""]
    plans = st.get("plans", {})
    for case, p in plans.items():
        if p:
            lines += [f"- batch plan, {case}: {p[-1]}"]
    return lines + [""]
