"""What ``diagnose`` shows: the verdict in plain language, the seed × step matrix (text,
JSON, and a self-contained HTML page with the matrix as an inline SVG picture).

In the matrix every seed's outcome in every step gets a letter: ``A`` is the outcome in
your mode, ``B`` the first other outcome met, and so on; so two cells with the same letter
in a row are the same outputs (or the same error type), and any pair of steps can be read
off. ``+`` marks a seed that ran after other tasks of its process (process_task_count > 1),
``!`` a failed sim.
"""

from __future__ import annotations

import html
import string
from collections.abc import Sequence
from typing import Any

from ..compare.runs import Words, key_label, same_outcome
from .steps import StepRun
from .verdict import Verdict
from ..results import Key, SeedOutcome

COLOURS = ["#cfd8dc", "#e6550d", "#3182bd", "#31a354", "#756bb1", "#fd8d3c", "#9e9ac8",
           "#6baed6", "#74c476", "#fdae6b"]
MAX_TEXT_ROWS = 60


class Matrix:
    """Outcome classes per (key, step) over the steps that ran."""

    def __init__(self, runs: Sequence[StepRun]) -> None:
        self.steps = [r for r in runs if r.ran]
        keys: set[Key] = set()
        for r in self.steps:
            keys |= set(r.view.outcomes)
        self.keys = sorted(keys)
        self.cells: dict[Key, list[tuple[int, SeedOutcome] | None]] = {}
        for k in self.keys:
            classes: list[SeedOutcome] = []
            row: list[tuple[int, SeedOutcome] | None] = []
            for r in self.steps:
                o = r.view.outcomes.get(k)
                if o is None:
                    row.append(None)
                    continue
                for i, c in enumerate(classes):
                    if same_outcome(c, o):
                        row.append((i, o))
                        break
                else:
                    classes.append(o)
                    row.append((len(classes) - 1, o))
            self.cells[k] = row

    @staticmethod
    def symbol(cell: tuple[int, SeedOutcome] | None) -> str:
        if cell is None:
            return "·"
        i, o = cell
        letter = string.ascii_uppercase[i % 26]
        return (letter + ("!" if o.error_type else "")
                + ("+" if (o.process_task_count or 0) > 1 else ""))

    def rows(self) -> list[list[str]]:
        return [[key_label(k), *map(self.symbol, self.cells[k])] for k in self.keys]

    def as_json(self) -> dict[str, Any]:
        return {"steps": [r.step.name for r in self.steps],
                "keys": [list(k) for k in self.keys],
                "cells": [self.rows()[i][1:] for i in range(len(self.keys))]}


def text(verdict: Verdict, runs: Sequence[StepRun], elapsed: float) -> list[str]:
    """The verdict first (plain language, evidence), then the seed × step table."""
    lines = [f"verdict: {verdict.summary}"]
    for f in verdict.findings:
        if f is not verdict.findings[0]:
            lines.append(f"also: {f.headline}")
        lines += [f"  evidence: {e}" for e in f.evidence]
    if verdict.reference:
        lines.append(f"  reference: {verdict.reference}")
    if verdict.next_command:
        lines += [f"  next: {verdict.next_why}:", f"    {verdict.next_command}"]
    lines += [f"  also try: {n}" for n in verdict.next_steps]
    m = Matrix(runs)
    if m.steps:
        w = Words.of(m.keys)
        lines.append("")
        lines.append(f"{w.column} × step (A = the outcome in your mode, B, C... other "
                     "outcomes; + ran after other tasks of its process; ! failed; · not run):")
        header = [w.column, *[r.step.name for r in m.steps]]
        rows = m.rows()
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
                  for i, h in enumerate(header)]
        lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for row in rows[:MAX_TEXT_ROWS]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if len(rows) > MAX_TEXT_ROWS:
            lines.append(f"  ... {len(rows) - MAX_TEXT_ROWS} more {w.many} (--json or --report)")
    lines.append("")
    for r in runs:
        lines.append(step_line(r))
    lines.append(f"total {elapsed:.1f} s")
    return lines


def step_line(r: StepRun) -> str:
    """A step that ran: its number, mode, time and results; one that did not: a sentence."""
    if r.ran:
        return f"step {r.index} {r.step.name} [{r.mode}]: {r.elapsed_s:.1f} s, {r.results}"
    why = r.skipped or "it was not needed"
    return f"{r.step.name} was not run: {why.rstrip('.')}."


def as_json(verdict: Verdict, runs: Sequence[StepRun], elapsed: float) -> dict[str, Any]:
    return {
        "exit_code": verdict.exit_code, "summary": verdict.summary,
        "findings": [f.model_dump() for f in verdict.findings],
        "reference": verdict.reference, "next_command": verdict.next_command,
        "next_why": verdict.next_why, "next_steps": verdict.next_steps,
        "steps": [{"index": r.index, "name": r.step.name, "title": r.step.title,
                   "sets": list(r.step.sets), "mode": r.mode, "ran": r.ran,
                   "skipped": r.skipped or None, "elapsed_s": round(r.elapsed_s, 2),
                   "results": str(r.results) if r.results else None} for r in runs],
        "matrix": Matrix(runs).as_json(), "elapsed_s": round(elapsed, 2)}


def _svg(m: Matrix) -> str:
    cw, ch, left, top = 96, 16, 70, 120
    width = left + cw * len(m.steps) + 10
    height = top + ch * len(m.keys) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11" role="img" '
           f'aria-label="seed by step outcome matrix">']
    for j, r in enumerate(m.steps):
        x = left + j * cw + cw / 2
        out.append(f'<text x="{x}" y="{top - 8}" transform="rotate(-35 {x} {top - 8})">'
                   f'{html.escape(r.step.name)}</text>')
    for i, k in enumerate(m.keys):
        y = top + i * ch
        out.append(f'<text x="{left - 6}" y="{y + ch - 4}" text-anchor="end">'
                   f'{html.escape(key_label(k))}</text>')
        for j, cell in enumerate(m.cells[k]):
            x = left + j * cw
            if cell is None:
                out.append(f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" '
                           'fill="#ffffff" stroke="#eeeeee"/>')
                continue
            idx, o = cell
            fill = "#222222" if o.error_type else COLOURS[idx % len(COLOURS)]
            out.append(f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" '
                       f'fill="{fill}"><title>{html.escape(key_label(k))} in '
                       f'{html.escape(m.steps[j].step.name)}: {html.escape(Matrix.symbol(cell))}'
                       '</title></rect>')
            label_colour = "#ffffff" if (o.error_type or idx) else "#333333"
            out.append(f'<text x="{x + cw / 2 - 1}" y="{y + ch - 4}" text-anchor="middle" '
                       f'fill="{label_colour}">{html.escape(Matrix.symbol(cell))}</text>')
    out.append("</svg>")
    return "\n".join(out)


def html_page(verdict: Verdict, runs: Sequence[StepRun], elapsed: float, title: str) -> str:
    """A self-contained page: verdict, evidence, the matrix as a picture, the steps."""
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>diagnose: {e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #ddd}"
        ".verdict{font-size:1.2em;padding:.6em;border-left:6px solid #e6550d;background:#fff5eb}"
        ".clean{border-left-color:#31a354;background:#f0fff0}</style></head><body>",
        f"<h1>diagnose: {e(title)}</h1>",
        f"<p class='verdict{'' if verdict.findings else ' clean'}'>{e(verdict.summary)}</p>",
    ]
    for f in verdict.findings:
        parts.append(f"<h3>{e(f.headline)}</h3><ul>")
        parts += [f"<li>{e(x)}</li>" for x in f.evidence]
        parts.append("</ul>")
    if verdict.reference:
        parts.append(f"<p>reference: {e(verdict.reference)}</p>")
    if verdict.next_command:
        parts.append(f"<p>next: {e(verdict.next_why)}:</p><pre>{e(verdict.next_command)}</pre>")
    if verdict.next_steps:
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in verdict.next_steps) + "</ul>")
    m = Matrix(runs)
    parts.append(f"<h2>{Words.of(m.keys).column} × step</h2><p>Same letter and colour in a row: the same outcome. "
                 "A (grey) is the outcome in your mode; + ran after other tasks of its "
                 "process; black: the sim failed; white: not run.</p>")
    parts.append(_svg(m))
    parts.append("<h2>steps</h2><table><tr><th>#</th><th>step</th><th>what it removes</th>"
                 "<th>mode</th><th>status</th></tr>")
    for r in runs:
        status = (f"{r.elapsed_s:.1f} s" if r.ran else
                  f"not run: {r.skipped or 'it was not needed'}")
        parts.append(f"<tr><td>{r.index}</td><td>{e(r.step.name)}</td><td>{e(r.step.title)}"
                     f"</td><td>{e(r.mode)}</td><td>{e(status)}</td></tr>")
    parts.append(f"</table><p>total {elapsed:.1f} s</p></body></html>")
    return "\n".join(parts)
