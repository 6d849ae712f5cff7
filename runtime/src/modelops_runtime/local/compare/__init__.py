"""Two runs of a study compared (set, seed) by (set, seed): ``local --compare``, ``compare``.

- covers: ``runs`` (outcomes, inputs, the comparison and its words), ``setdiff`` (which
  parameter set changed, named by its param).
"""
