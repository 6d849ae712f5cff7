"""The whole autoscaling loop with real components: a study submitted to the chart's
scheduler raises its adaptive target; KEDA's operator reads it from the scheduler's HTTP
route (the ScaledObject's metrics-api trigger), KEDA's metrics server serves it through the
API server's aggregation layer, kube-controller-manager's HPA controller scales the worker
Deployment, the ReplicaSet controller creates and deletes Pod objects, and the kubelet
stand-in (kubelet.py) runs and SIGTERMs one `dask worker` per pod. The Deployment's
replicas rise while the backlog lasts and fall back to minReplicas when it is gone, with
the HPA's own events as evidence; pods removed while the study still runs retire
gracefully and every run has exactly one result."""

from __future__ import annotations

import threading

from kubelet import Event
from loopkit import release, wait_replicas, write_study
from modelops_runtime.local.study.run import run_study
from modelops_runtime.local.study.studyfile import Study

SIMS, TAIL = 30, 2          # 28 runs of SHORT s, then 2 of LONG s
SHORT, LONG = 1.5, 20.0
MAX = 3


def test_replicas_follow_a_study_up_and_down(keda_plane, tmp_path):
    plane, keda = keda_plane
    study = Study.load(write_study(tmp_path, sims=SIMS, short=SHORT, long=LONG, tail=TAIL))
    with release(plane, tmp_path, "loop", tmp_path / "wheels", min_replicas=1,
                 max_replicas=MAX, sets=("worker.processes=1", "worker.threads=1")) as rel:
        from distributed import Client

        # idle: KEDA's HPA holds the Deployment at minReplicas, one worker runs
        assert wait_replicas(rel, lambda n: n == 1, "the idle release at minReplicas 1") == 1
        rel.kubelet.check()
        assert_eventually(lambda: rel.scaled_object_ready(), "the ScaledObject to be Ready", rel)
        client = Client(rel.kubelet.cluster.address, timeout=60)
        try:
            rel.kubelet.cluster.wait_for_workers(client, 1, timeout=180)
            done = threading.Event()
            outcome: dict = {}

            def submit():
                try:
                    outcome["run"] = run_study(client, study, rel.kubelet.plan.bundle_repo,
                                               progress=False, batch=1)
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    outcome["error"] = exc
                finally:
                    outcome["end"] = len(rel.kubelet.events)
                    done.set()

            thread = threading.Thread(target=submit, name="study")
            thread.start()
            # the backlog: the HPA scales the Deployment up to maxReplicas
            wait_replicas(rel, lambda n: n == MAX, f"the HPA to scale up to {MAX} pods",
                          timeout=240)
            assert_eventually(lambda: len(rel.kubelet.running()) == MAX,
                              f"{MAX} worker pods running", rel)
            assert done.wait(600), "the study did not finish within 600 s\n" + rel.describe()
            thread.join()
            if "error" in outcome:
                raise outcome["error"]
            run = outcome["run"]
            # back to minReplicas once the backlog is gone
            wait_replicas(rel, lambda n: n == 1, "the HPA to scale back down to 1 pod",
                          timeout=240)
            assert_eventually(lambda: len(rel.kubelet.running()) == 1
                              and not rel.kubelet.terminating, "one worker pod left", rel)
        finally:
            client.close(timeout=10)

        events = rel.kubelet.events
        timeline = rel.kubelet.timeline(events[0].at) + "\n" + rel.describe()
        # every run exactly once, none failed, even with pods removed mid-study
        assert not run.failures, run.failures
        assert sorted(r.seed for r in run.sims) == list(range(SIMS)), timeline
        assert run.aggregate is not None and run.aggregate.outputs["seeds"] == list(range(SIMS))
        during = [e for e in events[:outcome["end"]] if e.what == "sigterm"]
        assert during, "no pod was removed while the study ran:\n" + timeline
        assert_retired(events, timeline)
        # the HPA's own word for both directions
        hpa = rel.hpa()
        rescales = [e["message"] for e in rel.hpa_events() if e["reason"] == "SuccessfulRescale"]
        assert any(m.startswith(f"New size: {MAX}; reason: external metric") and
                   "above target" in m for m in rescales), rescales
        assert any(m.startswith("New size: 1; reason:") and "below target" in m
                   for m in rescales), rescales
        conditions = {c["type"]: c["status"] for c in hpa["status"]["conditions"]}
        assert conditions["AbleToScale"] == "True" and conditions["ScalingActive"] == "True", \
            hpa["status"]["conditions"]
        assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == MAX
        keda.check_alive()


def assert_retired(events: list[Event], timeline: str) -> None:
    """Every SIGTERMed worker exited by itself (code 0) before its grace period: retired
    through Dask, never SIGKILLed."""
    termed = {e.pod for e in events if e.what == "sigterm"}
    exits = {e.pod: e.detail for e in events if e.what == "exit"}
    assert not [e for e in events if e.what == "sigkill"], timeline
    assert termed and {p: exits.get(p) for p in termed} == {p: "0" for p in termed}, timeline


def assert_eventually(predicate, what: str, rel, timeout: float = 180) -> None:
    from support.cluster import wait_for

    def check():
        rel.kubelet.check()
        return predicate()
    wait_for(check, timeout, what, interval=0.5, on_fail=rel.describe)
