"""``modelops-runtime diagnose``: the layer-by-layer search of the debugging walkthrough.

- covers: ``steps`` (what each step runs), ``verdict`` (the signature of differing steps →
  a layer), ``report`` (text, JSON, HTML), ``command`` (running the steps in order).
- see also: docs/diagnose.md, docs/modes.md (the walkthrough by hand).
"""
