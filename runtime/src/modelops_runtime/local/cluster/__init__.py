"""The chart's pods as local processes.

- covers: ``render`` (helm template → typed spec), ``argv`` (edit a container's argv),
  ``launch`` (the launch plan: ports, env, state dirs), ``supervise`` (start, watch and
  stop the processes), ``stopping`` (how commands end on Ctrl-C and SIGTERM).
- does not: submit work (``study/``).
"""
