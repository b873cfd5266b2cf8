"""The run lifecycle of one watch session: trigger -> launch -> Job -> finish -> rollout hook.

Every transition that matters is written to the watch's status *before* the side effect it
guards, and each side effect is idempotent, so a crash between any two steps is resumed by
the next session from the status and from the Jobs found by name + labels:

    launch = write manifest (content-addressed) -> status.activeRun + runCounter -> create
             Job `<watch>-train-<n>` (409: adopt if ours) -> activeRun.jobCreated=true
    finish = read result -> status: baseline := run's manifest, lastRun, activeRun := null
             -> (promoted) rollout hook -> lastRun.rolloutPending=false

The decisions are pure (`decisions/trigger.py` when to launch, `decisions/adopt.py` which Job
is whose and what a missing one means, `decisions/finish.py` the state after a run); this
module does their I/O. `rt.fault(point)` marks the crash-test points between the steps.
"""

from __future__ import annotations

import time
from dataclasses import replace

import kubetrain_contract as contract

from kubetrain_operator import hooks, jobspec, memory, metrics
from kubetrain_operator.context import Restart, WatchContext
from kubetrain_operator.decisions import adopt
from kubetrain_operator.decisions.finish import Trained, finish_run, needs_manifest, rollout_result
from kubetrain_operator.decisions.trigger import Action, Decision, TriggerInput, decide
from kubetrain_operator.detection import Detection
from kubetrain_operator.kube import KubeError, selector
from kubetrain_operator.objectstore import SourceError
from kubetrain_operator.outcome import JOB_NAME_LABEL, RunOutcome, RunState, interpret
from kubetrain_operator.status import ActiveRun, Baseline, iso, parse_time


class Runs:
    def __init__(self, ctx: WatchContext, detection: Detection) -> None:
        self.ctx = ctx
        self.s = ctx.settings
        self.det = detection
        self.crossing_announced = False
        self.next_job_poll = 0.0
        self.next_rollout_try = 0.0
        self.next_rollout_check = 0.0
        self.last_rollout_error = ""

    def tick(self, now: float) -> None:
        """Poll the active run's Job when due, else ask the trigger; then the rollout hook."""
        if self.ctx.durable.active_run is not None:
            if now >= self.next_job_poll:
                self.next_job_poll = now + self.s.job_poll_seconds
                self.poll()
        else:
            self.evaluate(now)
        self.maybe_rollout(now)

    # -- trigger and launch -------------------------------------------------------------
    def evaluate(self, now: float) -> None:
        ctx, tally = self.ctx, self.det.tally
        spec, d = ctx.watch, ctx.durable
        last = d.last_run
        inp = TriggerInput(
            now=now,
            threshold=spec.trigger.threshold,
            debounce=spec.trigger.debounce,
            cooldown=spec.trigger.cooldown,
            max_delay=spec.trigger.max_delay,
            initial_training=spec.trigger.initial_training,
            suspended=spec.suspend,
            active_run=d.active_run is not None,
            source_ready=ctx.source.ready,
            has_baseline=d.baseline is not None,
            live_objects=tally.live_objects(),
            changes=tally.changes(),
            last_change_time=self.det.last_change_time,
            crossed_at=parse_time(d.crossed_at),
            last_finish_time=parse_time(last.finish_time) if last else None,
            last_run_failed=bool(last and last.failed),
            spec_changed_since_last_run=bool(last and last.generation != spec.generation),
        )
        decision = decide(inp)
        if ctx.decision is None or decision.reason != ctx.decision.reason:
            ctx.dirty = True
        ctx.decision = decision
        if decision.crossed and d.crossed_at is None:
            ctx.durable = d = d.with_(crossed_at=iso(now, millis=True))
            ctx.dirty = True
        if not decision.crossed:
            if d.crossed_at is not None:
                ctx.durable = d.with_(crossed_at=None)
                ctx.dirty = True
            self.crossing_announced = False
        elif not self.crossing_announced:
            self.crossing_announced = True
            ctx.event("Normal", "ThresholdCrossed", decision.trigger_reason)
        if decision.action is Action.LAUNCH:
            self.launch(decision, now)

    def launch(self, decision: Decision, now: float) -> None:
        ctx = self.ctx
        spec = ctx.watch
        manifest = contract.SnapshotManifest(
            watch=spec.watch_id,
            bucket=spec.source.bucket,
            prefix=spec.source.prefix,
            objects=self.det.tally.live_snapshot(),
            created_at=iso(now) or "",
        )
        digest = manifest.digest
        key = contract.manifest_key(spec.snapshot_dir, digest)
        try:
            self.det.store.put_manifest(key, manifest)
        except SourceError as exc:
            ctx.log.warning("cannot launch yet: %s", exc.message)
            return
        ctx.rt.fault("manifest")

        run = ctx.durable.run_counter + 1
        active = ActiveRun(
            job_name=jobspec.job_name(spec.name, run),
            run=run,
            start_time=iso(now) or "",
            trigger_reason=decision.trigger_reason,
            manifest_key=key,
            dataset_digest=digest,
            generation=spec.generation,
            job_created=False,
        )
        before = ctx.durable
        crossed_at = parse_time(before.crossed_at)
        ctx.durable = before.with_(run_counter=run, active_run=active)
        if not ctx.write_durable():
            ctx.durable = before  # nothing was created; the next tick tries again
            return
        ctx.rt.fault("status")
        if not self.ensure_job(active):
            return
        metrics.RUNS_STARTED.labels(*ctx.labels()).inc()
        if crossed_at is not None:
            metrics.TRIGGER_TO_JOB.labels(*ctx.labels()).observe(max(0.0, time.time() - crossed_at))
        ctx.event(
            "Normal",
            "JobLaunched",
            f"Job {active.job_name} trains on {len(manifest.objects)} objects "
            f"(snapshot {digest[:19]}): {decision.trigger_reason}",
        )
        self.next_job_poll = time.time() + self.s.job_poll_seconds
        self.crossing_announced = False

    # -- the run's Job ------------------------------------------------------------------
    def ensure_job(self, active: ActiveRun) -> bool:
        """Create the run's Job or adopt the existing one; True when it exists and is ours."""
        ctx = self.ctx
        job = jobspec.build_job(
            ctx.watch,
            run=active.run,
            manifest_key=active.manifest_key,
            dataset_digest=active.dataset_digest,
            trigger_reason=active.trigger_reason,
            default_image=self.s.default_image,
            default_mlflow_uri=self.s.default_mlflow_uri,
            trainer_uid=self.s.trainer_uid,
        )
        try:
            ctx.kube.create_job(ctx.namespace, job)
        except KubeError as exc:
            if not exc.conflict:
                ctx.log.warning("creating Job %s failed (will retry): %s", active.job_name, exc)
                return False
            existing = ctx.kube.get_job(ctx.namespace, active.job_name)
            found = adopt.classify(existing, active, watch=ctx.name, uid=ctx.watch.uid)
            if found is adopt.Found.MISSING:
                return False  # deleted in between; retry next tick
            if found is adopt.Found.FOREIGN:
                ctx.event(
                    "Warning",
                    "JobNameTaken",
                    f"a Job named {active.job_name} exists and does not belong to this watch; skipping run {active.run}",
                )
                ctx.durable = ctx.durable.with_(active_run=None)
                ctx.write_durable()
                return False
            ctx.log.info("Job %s already exists: adopted", active.job_name)
        ctx.rt.fault("job")  # crash tests: the Job exists, the status does not say so yet
        ctx.durable = ctx.durable.with_(active_run=replace(active, job_created=True))
        ctx.write_durable()
        return True

    def adopt_jobs(self) -> None:
        """Reconcile status with the watch's Jobs (by labels + owner): counter, active run."""
        ctx = self.ctx
        jobs = ctx.kube.list_jobs(ctx.namespace, selector(jobspec.selector_labels(ctx.name)))
        adoption = adopt.adopt_by_labels(ctx.durable, jobs, watch=ctx.name, uid=ctx.watch.uid)
        if adoption is None:
            return
        ctx.durable = adoption.durable
        ctx.write_durable(raise_errors=True)
        ctx.event("Normal", "JobAdopted", f"adopted Job {adoption.job_name} found by its labels")

    def poll(self) -> None:
        ctx = self.ctx
        active = ctx.durable.active_run
        assert active is not None
        try:
            job = ctx.kube.get_job(ctx.namespace, active.job_name)
        except KubeError as exc:
            ctx.log.warning("reading Job %s: %s", active.job_name, exc)
            return
        found = adopt.classify(job, active, watch=ctx.name, uid=ctx.watch.uid)
        if found is adopt.Found.MISSING:
            self.ensure_job(active)  # the crash window between status write and creation
            return
        if found is not adopt.Found.OURS:
            self.finish(active, adopt.lost_outcome(found, active))
            return
        assert job is not None
        if not active.job_created:
            ctx.durable = ctx.durable.with_(active_run=replace(active, job_created=True))
            ctx.write_durable()
            ctx.event("Normal", "JobAdopted", f"adopted existing Job {active.job_name}")
        outcome = interpret(job, [])
        if outcome.state is RunState.RUNNING:
            return
        try:
            pods = ctx.kube.list_pods(ctx.namespace, f"{JOB_NAME_LABEL}={active.job_name}")
        except KubeError as exc:
            ctx.log.warning("listing pods of %s: %s", active.job_name, exc)
            return
        self.finish(active, interpret(job, pods))

    # -- completion ---------------------------------------------------------------------
    def finish(self, active: ActiveRun, outcome: RunOutcome) -> None:
        ctx, tally = self.ctx, self.det.tally
        now = time.time()
        manifest = None
        if needs_manifest(outcome):
            try:
                manifest = self.det.store.read_manifest(active.manifest_key)
            except SourceError as exc:
                ctx.log.warning(
                    "run %s succeeded but its manifest is unreadable (retrying): %s",
                    active.job_name,
                    exc.message,
                )
                return
        trained = Trained(manifest.digest, len(manifest.objects)) if manifest else None
        before = ctx.durable
        step = finish_run(before, active, outcome, now=now, trained=trained)
        ctx.durable = step.durable
        if manifest is not None:
            # Changes that arrived during the run are now measured against what was trained;
            # re-diffed before the write so that the status patch shows matching counts.
            tally.set_baseline(manifest.objects)
            del manifest
            memory.release()
        if not ctx.write_durable():
            ctx.durable = before
            if step.succeeded:
                self._restore_baseline(before.baseline)
            return
        counter = metrics.RUNS_SUCCEEDED if step.succeeded else metrics.RUNS_FAILED
        counter.labels(*ctx.labels()).inc()
        ctx.event(step.event_type, step.event_reason, step.event_message)
        self.crossing_announced = False
        ctx.dirty = True
        self.prune()

    def _restore_baseline(self, baseline: Baseline | None) -> None:
        """Undo an in-memory baseline switch whose status write failed."""
        if baseline is None:
            self.det.tally.set_baseline({})
            return
        try:
            self.det.load_baseline(baseline)
        except SourceError as exc:
            raise Restart(f"cannot restore the previous baseline: {exc.message}") from exc

    def prune(self) -> None:
        """Keep the newest `jobHistoryLimit` finished Jobs of this watch."""
        ctx = self.ctx
        try:
            jobs = ctx.kube.list_jobs(ctx.namespace, selector(jobspec.selector_labels(ctx.name)))
            for name in adopt.prunable(
                jobs, watch=ctx.name, uid=ctx.watch.uid, keep=ctx.watch.training.job_history_limit
            ):
                ctx.kube.delete_job(ctx.namespace, name)
        except KubeError as exc:
            ctx.log.warning("pruning old Jobs: %s", exc)

    # -- serving ------------------------------------------------------------------------
    def maybe_rollout(self, now: float) -> None:
        """Promoted run -> rollout hook (at-least-once); then periodic rollout checks."""
        ctx = self.ctx
        rollout = ctx.rt.rollout
        last = ctx.durable.last_run
        if last is not None and last.rollout_pending and now >= self.next_rollout_try:
            model = f"{last.model_name}:{last.model_version}"
            try:
                serving = rollout.promoted(
                    ctx.kube.get_watch(ctx.namespace, ctx.name), rollout_result(last)
                )
            except hooks.Permanent as exc:
                ctx.event("Warning", "RolloutFailed", f"{model}: {exc}")
                serving = None
            except Exception as exc:  # transient (API/network): retried, training unaffected
                self.next_rollout_try = now + self.s.rollout.retry_seconds
                ctx.event("Warning", "RolloutRetrying", f"{model}: {exc}")
                return
            if serving is not None:
                ctx.serving = serving
            ctx.durable = ctx.durable.with_(last_run=replace(last, rollout_pending=False))
            ctx.write_durable()
            self.next_rollout_check = now + self.s.rollout.check_seconds
            return
        if now < self.next_rollout_check or not rollout.enabled:
            return
        self.next_rollout_check = now + self.s.rollout.check_seconds
        try:
            serving = rollout.check(ctx.body)
        except hooks.Permanent as exc:
            if str(exc) != self.last_rollout_error:
                self.last_rollout_error = str(exc)
                ctx.event("Warning", "RolloutFailed", str(exc))
            return
        except Exception as exc:
            ctx.log.warning("rollout check failed (will retry): %s", exc)
            return
        self.last_rollout_error = ""
        if serving is not None and serving != ctx.serving:
            ctx.serving = serving
            ctx.dirty = True
