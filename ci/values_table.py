#!/usr/bin/env python3
"""The chart's generated documentation: the values table and the presets table.

- Values: a key is documented by a `# -- text` comment block right above it in
  chart/values.yaml (helm-docs' convention; further `# ` lines continue the text). Its
  default comes from values.yaml, its type from chart/values.schema.json, so the table
  cannot drift from what helm accepts.
- Presets: one row per chart/presets/*.yaml, from the file's header comment (summary,
  Isolates:, Trade-offs:) and its five mode keys.
- Written between marker lines into chart/README.md (values and presets; packaged with the
  chart, so `helm show readme` has them) and docs/kubernetes.md (values; the docs site).

    python ci/values_table.py           print the values table
    python ci/values_table.py --write   rewrite the tables in chart/README.md and docs/kubernetes.md
    python ci/values_table.py --check   exit 1 if one of them is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
VALUES = REPO / "chart" / "values.yaml"
SCHEMA = REPO / "chart" / "values.schema.json"
PRESETS = REPO / "chart" / "presets"
DOCS_PAGE = REPO / "docs" / "kubernetes.md"
CHART_README = REPO / "chart" / "README.md"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
PRESETS_START, PRESETS_END = "<!-- presets-table:start -->", "<!-- presets-table:end -->"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
_DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")
_MORE = re.compile(r"^ *#(?: (?P<text>.*))?$")


@dataclass(frozen=True)
class Entry:
    key: str          # dotted path, e.g. worker.executor.type
    type: str
    default: str
    description: str


def documented_keys(text: str) -> dict[str, str]:
    """Dotted key → description, for every key preceded by a `# --` block."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []   # (indent, key) of the enclosing maps
    pending: list[str] | None = None
    for line in text.splitlines():
        if m := _DOC.match(line):
            pending = [m.group("text").strip()]
            continue
        if pending is not None and (m := _MORE.match(line)):
            pending.append((m.group("text") or "").strip())
            continue
        m = _KEY.match(line)
        if not m:
            if not line.lstrip().startswith("-"):
                pending = None
            continue
        indent = len(m.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m.group("key")])
        stack.append((indent, m.group("key")))
        if pending is not None:
            docs[path] = " ".join(p for p in pending if p)
        pending = None
    return docs


def lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def leaf_paths(tree: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every non-map value (empty maps count as leaves)."""
    if isinstance(tree, dict) and tree:
        out: list[str] = []
        for key, value in tree.items():
            out += leaf_paths(value, f"{prefix}{key}.")
        return out
    return [prefix.rstrip(".")]


def schema_node(schema: dict, dotted: str) -> dict:
    """The schema node of a dotted key (its own $ref unresolved); KeyError if absent."""
    node = schema
    for part in dotted.split("."):
        node = _resolve(schema, node)["properties"][part]
    return node


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    return node


# Names for the schema's patterns, so the table says what a pattern means.
_PATTERNS = {
    "^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$": "DNS label",
    "^[0-9]+(ms|s|m|h)$": "duration (`30s`, `1m`)",
    "^[0-9]+%$": "percentage",
}


_REFS = {"quantity": "quantity", "cpu": "cpu quantity",
         "memory": "memory (`1536Mi`, `1.5Gi`, `2G`)",
         "nullableMemory": "null or memory (`1536Mi`, `1.5Gi`, `2G`)",
         "readinessProbe": "probe timing (map)", "livenessProbe": "probe timing (map)",
         "tolerations": "Toleration list", "nodeSelector": "map of label key → value"}


def describe_type(schema: dict, node: dict) -> str:
    ref = node.get("$ref", "").rsplit("/", 1)[-1]
    if ref in _REFS:
        return _REFS[ref]
    node = _resolve(schema, node)
    if node.get("pattern") in _PATTERNS:
        return _PATTERNS[node["pattern"]]
    if "anyOf" in node:
        return " or ".join(describe_type(schema, n) for n in node["anyOf"])
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "any")
    text = {"array": "list", "object": "map", "boolean": "bool"}.get(kind, kind)
    if "minimum" in node:
        text += f" ≥ {node['minimum']}"
    if "exclusiveMinimum" in node:
        text += f" > {node['exclusiveMinimum']}"
    if kind == "string" and "pattern" in node:
        text += " (pattern)"
    return text


def entries() -> list[Entry]:
    text = VALUES.read_text()
    values = yaml.safe_load(text)
    schema = json.loads(SCHEMA.read_text())
    out = []
    for key, description in documented_keys(text).items():
        default = json.dumps(lookup(values, key), ensure_ascii=False, separators=(", ", ": "))
        out.append(Entry(key, describe_type(schema, schema_node(schema, key)),
                         default, description))
    return out


def _cell(text: str) -> str:
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def table() -> str:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for e in entries():
        rows.append(f"| `{e.key}` | {_cell(e.type)} "
                    f"| `{_cell(e.default)}` | {_cell(e.description)} |")
    return "\n".join(rows)


_HEADER = re.compile(r"^(?P<name>[\w-]+): (?P<summary>.*?)\s*Isolates: (?P<isolates>.*?)\s*"
                     r"Trade-offs: (?P<tradeoffs>.*?)\s*Select it with", re.S)


def presets_table() -> str:
    """One row per shipped preset: its header's summary, what it isolates, its
    trade-offs, and the five mode keys it sets."""
    rows = ["| `mode` | processes × threads, executor | what it is | isolates | trade-offs |", "|---|---|---|---|---|"]
    for path in sorted(PRESETS.glob("*.yaml")):
        text = path.read_text()
        header = " ".join(line[1:].strip() for line in text.split("\nmode:")[0].splitlines())
        m = _HEADER.match(header)
        if not m or m["name"] != path.stem:
            raise SystemExit(f"{path}: the header must read '<name>: ... Isolates: ... "
                             "Trade-offs: ... Select it with ...'")
        w = yaml.safe_load(text)["worker"]
        x = w["executor"]
        worker = f"{w['processes']} × {w['threads']}, `{x['type']}`"
        if x["type"] == "isolated_warm":
            worker += (", a fresh venv per task" if x["forceFreshVenv"] else ", cached venvs")
            worker += (", a fresh process per task" if x["maxProcessReuse"] == 1
                       else f", a process reused for {x['maxProcessReuse']} tasks")
        rows.append(f"| `{path.stem}` | {worker} | {_cell(m['summary'])} "
                    f"| {_cell(m['isolates'])} | {_cell(m['tradeoffs'])} |")
    return "\n".join(rows)


def replace_between(text: str, start: str, end: str, body: str) -> str | None:
    """``text`` with what lies between the ``start`` and ``end`` marker lines replaced by
    ``body``; None if a marker is missing. (bench/run.py writes its README section with it.)"""
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def readme_with_table(readme: str, name: str = "docs/kubernetes.md") -> str:
    new = replace_between(readme, START, END, table())
    if new is None:
        raise SystemExit(f"{name} lacks the {START} / {END} markers")
    return new


def chart_readme(text: str) -> str:
    """chart/README.md with both tables current."""
    text = readme_with_table(text, "chart/README.md")
    new = replace_between(text, PRESETS_START, PRESETS_END, presets_table())
    if new is None:
        raise SystemExit(f"chart/README.md lacks the {PRESETS_START} / {PRESETS_END} markers")
    return new


# each page → how to make it current
TARGETS = {DOCS_PAGE: readme_with_table, CHART_README: chart_readme}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the tables")
    group.add_argument("--check", action="store_true", help="fail if a table is stale")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(table())
        return 0
    stale = []
    for path, update in TARGETS.items():
        current = path.read_text()
        wanted = update(current)
        if current == wanted:
            continue
        stale.append(path.relative_to(REPO))
        if args.write:
            path.write_text(wanted)
    if args.check and stale:
        print(f"{', '.join(map(str, stale))}: the generated tables are out of date: run "
              "python ci/values_table.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
