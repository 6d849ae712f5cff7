"""The laptop: the chart's cluster as local processes, studies, comparisons, ``diagnose``.

- covers: ``cluster/`` (render, launch plan, supervise, stopping), ``study/`` (the study
  file and sets, running it: the ``local`` command), ``compare/`` (two runs, (set, seed) by
  (set, seed)), ``diagnose/`` (the layer-by-layer search), and the floor they share:
  ``results`` (what a run produced) and ``console`` (what is printed).
- does not: parse the command line (``cli/``).
"""
