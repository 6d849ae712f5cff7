"""Client API: submit a study's SimTasks, aggregate their outputs, gather with progress,
read the cluster's executor figures. What a user's Dask client imports."""

from ..models import SimResult, SimTask
from .environments import package_sets
from .gather import StudyResult, TaskFailure, gather_study
from .stats import ClusterStats, cluster_stats
from .submit import (AGGREGATION_RESOURCE, aggregate, run_aggregation, run_simulation, submit,
                     task_key)

__all__ = ["AGGREGATION_RESOURCE", "ClusterStats", "SimResult", "SimTask", "StudyResult",
           "TaskFailure", "aggregate",
           "cluster_stats", "gather_study", "package_sets", "run_aggregation", "run_simulation", "submit",
           "task_key"]
