"""Client API: submit a study's SimTasks (or a plan of parameter sets × seeds), aggregate
their outputs, gather with progress, read the cluster's executor figures. What a user's
Dask client imports."""

from ..models import SimResult, SimTask
from .environments import package_sets
from .gather import StudyResult, TaskFailure, gather_study
from .outcomes import RunFailure, RunOutcome, SetResult, StudySetsResult
from .plan import ParamSet, Seeds, StudyPlan, plan_of, run_key, set_id
from .cluster_stats import ClusterStats, cluster_stats
from .store import ResultsStore, ResultsStoreError, StoreInputsDiffer
from .stored import StoredStudyResult
from .batching import BATCH_TARGET, BatchPlan
from .submit import (AGGREGATION_RESOURCE, DEFAULT_WINDOW, StudySubmission,
                     aggregate,
                     run_aggregation, run_simulation, submit, submit_study, task_key)

__all__ = ["AGGREGATION_RESOURCE", "BATCH_TARGET", "BatchPlan", "DEFAULT_WINDOW", "ClusterStats", "ParamSet", "RunFailure",
           "ResultsStore", "ResultsStoreError", "RunOutcome", "Seeds", "SetResult", "SimResult", "SimTask", "StudyPlan",
           "StoreInputsDiffer", "StoredStudyResult", "StudyResult", "StudySetsResult", "StudySubmission", "TaskFailure", "aggregate",
           "cluster_stats", "gather_study", "package_sets", "plan_of", "run_aggregation",
           "run_key", "run_simulation", "set_id", "submit", "submit_study", "task_key"]
