"""The whole autoscaling loop with real components: a study submitted to the chart's
scheduler raises its adaptive target; KEDA's operator reads it from the scheduler's HTTP
route (the ScaledObject's metrics-api trigger), KEDA's metrics server serves it through the
API server's aggregation layer, kube-controller-manager's HPA controller scales the worker
Deployment, the ReplicaSet controller creates and deletes Pod objects, and the kubelet
stand-in (kubelet.py) runs and SIGTERMs one `dask worker` per pod. The Deployment's
replicas rise while the backlog lasts and fall back to minReplicas when it is gone, with
the HPA's own events as evidence; pods removed while the study still runs retire
gracefully and every run has exactly one result. With minReplicas 0, KEDA itself takes
the Deployment from 0 to 1 pod for a study and back to 0 after its cooldown."""

from __future__ import annotations

import threading

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
        assert_retired(rel, timeline)
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


def test_replicas_scale_from_zero_and_back(keda_plane, tmp_path):
    """minReplicas 0: no worker while the scheduler has nothing to do; a study's first runs
    wait for KEDA to activate the Deployment (0 → 1, KEDA's own step; the HPA then takes
    over), and after the cooldown the last pod retires."""
    plane, _ = keda_plane
    sims = 8
    study = Study.load(write_study(tmp_path, sims=sims, short=1.0, long=1.0, tail=0))
    with release(plane, tmp_path, "zero", tmp_path / "wheels", min_replicas=0,
                 max_replicas=2, cooldown=5, sets=("worker.processes=1", "worker.threads=1")
                 ) as rel:
        from distributed import Client

        wait_replicas(rel, lambda n: n == 0, "KEDA to scale the idle release to zero")
        assert_eventually(lambda: not rel.kubelet.running() and not rel.kubelet.terminating,
                          "no worker pod", rel)
        client = Client(rel.kubelet.cluster.address, timeout=60)
        try:
            run = run_study(client, study, rel.kubelet.plan.bundle_repo, progress=False,
                            batch=1)
        finally:
            client.close(timeout=10)
        assert not run.failures and sorted(r.seed for r in run.sims) == list(range(sims))
        wait_replicas(rel, lambda n: n == 0, "KEDA to scale back to zero after the cooldown")
        assert_eventually(lambda: not rel.kubelet.running() and not rel.kubelet.terminating,
                          "the last worker pod gone", rel)
        events = rel.kubelet.events
        timeline = rel.kubelet.timeline(events[0].at) + "\n" + rel.describe()
        assert [e.what for e in events if e.what == "start"], timeline
        assert_retired(rel, timeline)
        reasons = rel.keda_events()
        # KEDA's own word: activated for the study, deactivated after it
        activated = [i for i, r in enumerate(reasons) if r == "KEDAScaleTargetActivated"]
        deactivated = [i for i, r in enumerate(reasons) if r == "KEDAScaleTargetDeactivated"]
        assert activated and deactivated and activated[0] < deactivated[-1], reasons


def assert_retired(rel, timeline: str) -> None:
    """Every SIGTERMed worker exited by itself before its grace period (never SIGKILLed),
    and each that had joined the cluster retired through Dask (exit code 0). One SIGTERMed
    before it registered with the scheduler (the idle release scaled to zero at once) has
    nothing to retire and may end by the signal."""
    events = rel.kubelet.events
    termed = {e.pod for e in events if e.what == "sigterm"}
    exits = {e.pod: e.detail for e in events if e.what == "exit"}
    logs = {w.name: w.log_text() for w in rel.kubelet.cluster.workers}
    joined = {p for p in termed if "Registered to:" in logs.get(p, "")}
    assert not [e for e in events if e.what == "sigkill"], timeline
    assert termed and termed <= set(exits), timeline
    assert joined and {p: exits[p] for p in joined} == dict.fromkeys(joined, "0"), timeline
    assert all(exits[p] in ("0", "-15") for p in termed - joined), timeline


def assert_eventually(predicate, what: str, rel, timeout: float = 180) -> None:
    from support.cluster import wait_for

    def check():
        rel.kubelet.check()
        return predicate()
    wait_for(check, timeout, what, interval=0.5, on_fail=rel.describe)
