"""What ``modelops-runtime local`` prints about a study run: what it will run, each
aggregate, the per-set table of a study with several parameter sets, the failed runs (one
line per distinct error, with the count of runs it hit)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..results import StudyRun
from ..console import Echo
from .studyfile import Study

SHOWN_SETS = 40        # rows of the per-set table printed (all of them are in --results)
SHOWN_FAILURES = 5     # distinct errors printed
SHOWN_WHERE = 5        # (set, seed) runs named per distinct error


def _everything(results_named: bool) -> str:
    return ("every one is in the --results file" if results_named
            else "--results FILE keeps every one")


def announce(study: Study, echo: Echo, sims: int | None) -> None:
    seeds = study.seeds(sims)
    span = f"seeds {seeds.first}..{seeds.last}"
    n_sets = study.set_count
    if n_sets == 1:
        line = f"study {study.name}: {seeds.count} seeded sims of {study.entrypoint} ({span})"
    else:
        line = (f"study {study.name}: {n_sets} parameter sets × {seeds.count} seeds = "
                f"{n_sets * seeds.count} runs of {study.entrypoint} ({span} for every set)")
    then = [a for a in (study.aggregate and f"{study.aggregate} per set" if n_sets > 1
                        else study.aggregate,
                        study.aggregate_sets and f"{study.aggregate_sets} across sets") if a]
    echo(line + (f", then {', '.join(then)}" if then else ""))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _mapping(out: Any, echo: Echo, indent: str = "  ") -> None:
    if isinstance(out, Mapping):
        width = max((len(str(k)) for k in out), default=0)
        for k, v in out.items():
            echo(f"{indent}{str(k):<{width}}  {v}")
    else:
        echo(f"{indent}{out!r}")


def table(rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned text (numbers right-aligned), the first row the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def fmt(row: list[str], head: bool) -> str:
        cells = []
        for cell, w in zip(row, widths):
            numeric = not head and cell.replace(".", "", 1).replace("-", "", 1).isdigit()
            cells.append(cell.rjust(w) if numeric else cell.ljust(w))
        return "  ".join(cells).rstrip()

    return [fmt(rows[0], True)] + [fmt(r, False) for r in rows[1:]]


def set_table(run: StudyRun, study: Study, results_named: bool = False) -> list[str]:
    """One row per set: its label or id, the params that vary, its runs, its aggregate."""
    shared = set(study.params)
    names = list(dict.fromkeys(k for s in run.param_sets for k in s.params if k not in shared))
    by_id = {a.set_id: a for a in run.set_aggregates}
    out_keys: list[str] = []
    for a in run.set_aggregates:
        if a.aggregate is not None and isinstance(a.aggregate.outputs, Mapping):
            out_keys += [k for k, v in a.aggregate.outputs.items()
                         if k not in out_keys and not isinstance(v, (list, dict))]
    labelled = any(s.label is not None for s in run.param_sets)
    rows = [(["label"] if labelled else []) + ["set"] + names + ["ok", "failed"] + out_keys]
    for s in run.param_sets[:SHOWN_SETS]:
        a = by_id.get(s.id)
        outs = a.aggregate.outputs if a and a.aggregate is not None else {}
        row = ([s.label or ""] if labelled else []) + [s.id]
        row += [_cell(s.params.get(k, "")) for k in names]
        row += [str(a.runs if a else 0), str(a.failed if a else 0)]
        if isinstance(outs, Mapping) and outs:
            row += [_cell(outs.get(k, "")) for k in out_keys]
        else:
            row += ["-"] * len(out_keys)
        rows.append(row)
    lines = table(rows)
    if len(run.param_sets) > SHOWN_SETS:
        lines.append(f"... and {len(run.param_sets) - SHOWN_SETS} more sets "
                     f"({_everything(results_named)})")
    return lines


def report(run: StudyRun, study: Study, echo: Echo, results_named: bool = False) -> None:
    """The aggregates (per set as a table, or the one set's) and the failed runs."""
    several = len(run.param_sets) > 1
    if several:
        head = f" by {study.aggregate}" if study.aggregate else ""
        echo(f"per-set results{head} ({len(run.param_sets)} sets):")
        for line in set_table(run, study, results_named):
            echo(f"  {line}")
        for a in run.set_aggregates:
            if a.aggregate_error and a.runs:
                echo(f"  set {a.set_id}: aggregate failed: {a.aggregate_error}")
    name = study.aggregate_sets if several else study.aggregate
    if run.aggregate_error:
        echo(f"aggregate ({name}) failed: {run.aggregate_error}")
    if run.aggregate is not None:
        echo(f"aggregate ({name}{' across sets' if several else ''}):")
        _mapping(run.aggregate.outputs, echo)


def headline(message: str) -> str:
    """A failure's message in one line: its first line, and when that ends in a colon (a
    tool's output follows, e.g. uv's), the line that says why (`cause:`, else `error:`)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if not lines:
        return ""
    first = lines[0]
    if first.endswith(":"):
        for prefix in ("cause:", "error:"):
            why = next((ln for ln in lines[1:] if ln.startswith(prefix)), None)
            if why:
                return f"{first} {why}"
    return first


def _seconds(value: float) -> str:
    """A duration for the counts line: two decimals under 10 s (a short study's ratio to
    another mode must not hide in rounding: 0.45 s and 0.54 s are not both "0.5 s")."""
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def report_failures(run: StudyRun, echo: Echo, results_named: bool = False) -> None:
    """The counts, then each distinct error once (type and first line of its message) with
    how many runs it hit and which: an error every run hits is one line, not one per run."""
    several = len(run.param_sets) > 1
    what = "runs" if several else "sims"
    echo(f"{what}: {len(run.sims)} ok, {len(run.failures)} failed; "
         f"elapsed {_seconds(run.elapsed_s)}; {run.dask_tasks} Dask task(s)")
    if run.batch_plan:
        echo(f"batch plan: {run.batch_plan}")
    names = {s.id: s.name for s in run.param_sets}
    total = len(run.sims) + len(run.failures)
    groups: dict[tuple[str, str], list] = {}
    for f in run.failures:
        first = headline(f.message or "")
        groups.setdefault((f.error_type, first), []).append(f)
    for (error_type, first), hit in list(groups.items())[:SHOWN_FAILURES]:
        where = ", ".join(f"set {names.get(f.set, f.set)} seed {f.seed}" if several
                          else str(f.seed) for f in hit[:SHOWN_WHERE])
        where = where if several else f"seed{'s' if len(hit) > 1 else ''} {where}"
        if len(hit) > SHOWN_WHERE:
            where += f", … {len(hit) - SHOWN_WHERE} more"
        if len(hit) == 1:
            echo(f"  {where} failed: {error_type}: {first}")
        else:
            count = (f"all {len(hit)} {what}" if len(hit) == total
                     else f"{len(hit)} of {total} {what}")
            echo(f"  {count} failed with this error ({where}): {error_type}: {first}")
    if len(groups) > SHOWN_FAILURES:
        rest = sum(len(hit) for hit in list(groups.values())[SHOWN_FAILURES:])
        echo(f"  ... and {rest} more failed with {len(groups) - SHOWN_FAILURES} other "
             f"error(s) ({_everything(results_named)})")
    if several and run.failures:
        per_set: dict[str, int] = {}
        for f in run.failures:
            per_set[f.set] = per_set.get(f.set, 0) + 1
        echo("  failed runs per set: " + ", ".join(f"{names.get(k, k)}={v}"
                                                   for k, v in per_set.items()))


def all_ok(run: StudyRun, study: Study) -> bool:
    """Every run succeeded and every aggregate the study asks for was made."""
    if run.failures:
        return False
    if len(run.param_sets) > 1:
        if study.aggregate and any(a.aggregate is None for a in run.set_aggregates):
            return False
        return run.aggregate is not None or not study.aggregate_sets
    return run.aggregate is not None or not study.aggregate
