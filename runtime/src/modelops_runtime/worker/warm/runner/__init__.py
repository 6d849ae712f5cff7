"""The program a warm process runs inside its venv's interpreter (stdlib only).

- covers: ``main`` (options, request loop, entrypoints, error replies), ``frames`` (the
  wire codec and the names both ends share; the worker imports it), ``confine``
  (parent-death signal, Landlock, data cap, lifeline), ``template`` (a template's loop and
  the set-up of the task processes it forks), ``prewarm`` (which learned modules a template
  may import, checked in probe forks), ``program`` (compiles the five once per venv; runs
  in the worker).
- does not: import anything of ours in the child: the runner loads its siblings itself.
- see also: docs/design.md (the wire protocol).
"""
