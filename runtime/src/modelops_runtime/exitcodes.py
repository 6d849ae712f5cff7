"""Exit codes of every `modelops-runtime` command and of a worker refusing its configuration.

- covers: the one definition of each code; commands list theirs in ``--help`` from these.
- does not: decide which code a command returns (each command's module does).
- see also: ``cli/options.py`` (how ``--help`` shows them).
"""

from __future__ import annotations

EXIT_OK = 0              # the command did what was asked; nothing differs
EXIT_FAILED = 1          # a run, an aggregation or a file failed (see stderr)
EXIT_USAGE = 2           # bad command line (argparse's own code)
EXIT_INPUTS_DIFFER = 2   # --compare / compare: the two runs' inputs differ; nothing compared
EXIT_DIFFERS = 3         # outcomes differ (compare), or diagnose named a layer that changes them
EXIT_CONFIG = 78         # a worker's MODELOPS_* configuration is invalid (EX_CONFIG)
EXIT_INTERRUPTED = 130   # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143    # SIGTERM (128 + SIGTERM)
