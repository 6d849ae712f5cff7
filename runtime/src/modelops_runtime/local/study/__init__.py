"""A study on a local cluster: ``modelops-runtime local``.

- covers: ``studyfile`` (study.yaml) and ``sets`` (grid, sets, sets_file, lazily), ``run``
  (pack, submit, gather), ``report`` (what it prints), ``table`` (--results as a table),
  ``command`` (the ``local`` command: render, plan, start, run, compare).
- see also: runtime/examples/sir/README.md (the study format).
"""
