"""The laptop: render the chart, plan and supervise the local cluster, run a study,
compare runs (``modelops-runtime local``)."""
