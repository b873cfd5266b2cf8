"""Drives tests/images/kubetrain_stub.py, the scripted workload, in real pods on the real node.

The operator's platform tests need a training run to end when and how the test says, and
serving pods to become Ready (or not) on cue. Nothing here writes a pod's status: the real
kubelet runs the stub's containers and reports them; the test only tells the container what
to do, through `kubectl exec` (the kubelet's exec API), as an operator's user could.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterable
from typing import Any, Protocol

#: A pod phase in which its container may still be started or running.
LIVE_PHASES = (None, "Pending", "Running")


def container_running(pod: dict[str, Any], container: str) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            return "running" in (cs.get("state") or {})
    return False


class Reads(Protocol):
    """The reads the driver needs (kubetrain_operator.kube.Kube has them)."""

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class StubWorkload:
    """The stub IMAGE's reference, and `kubectl exec` into its containers."""

    def __init__(self, *, image: str, kubectl: str, kubeconfig: str, kube: Reads) -> None:
        self.image = image
        self._kubectl = [kubectl, "--kubeconfig", kubeconfig]
        self._kube = kube

    def exec(
        self, namespace: str, pod: str, container: str, args: Iterable[str], stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._kubectl, "exec", "-i", "-n", namespace, pod, "-c", container, "--", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def live_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self._kube.list_pods(namespace, selector)
            if (p.get("status") or {}).get("phase") in LIVE_PHASES
            and not p["metadata"].get("deletionTimestamp")
        ]

    def tell(
        self,
        namespace: str,
        pod: dict[str, Any],
        container: str,
        args: Iterable[str],
        stdin: str = "",
        timeout: float = 120,
    ) -> None:
        """Run the stub's control command in POD once its container runs (pulled, started)."""
        name = pod["metadata"]["name"]
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            current = next(
                (p for p in self._kube.list_pods(namespace, "") if p["metadata"]["name"] == name),
                None,
            )
            if current is None:
                raise AssertionError(f"pod {namespace}/{name} disappeared before the stub ran")
            if container_running(current, container):
                done = self.exec(namespace, name, container, args, stdin)
                if done.returncode == 0:
                    return
                last = (done.stderr or done.stdout).strip()
            time.sleep(0.3)
        why = last or f"the {container} container never ran"
        raise AssertionError(
            f"could not run {list(args)} in {namespace}/{name} in {timeout}s: {why}"
        )

    # ---------------------------------------------------------------- training Jobs
    def finish_job(
        self,
        namespace: str,
        job_name: str,
        *,
        exit_code: int,
        message: str,
        expect: str,
        timeout: float = 120,
    ) -> dict[str, Any]:
        """End the Job's training pods with EXIT_CODE and MESSAGE (the termination message)
        until the real Job controller sets condition EXPECT (Complete/Failed)."""
        outcome = json.dumps({"exitCode": exit_code, "message": message})
        told: set[str] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self._kube.get_job(namespace, job_name)
            assert job is not None, f"Job {job_name} disappeared"
            true = {
                c["type"]
                for c in (job.get("status") or {}).get("conditions") or []
                if c.get("status") == "True"
            }
            if expect in true:
                return job
            for pod in self.live_pods(namespace, f"batch.kubernetes.io/job-name={job_name}"):
                if pod["metadata"]["name"] not in told:
                    left = max(1.0, deadline - time.monotonic())
                    self.tell(
                        namespace, pod, "trainer", ["kubetrain-stub", "finish"], outcome, left
                    )
                    told.add(pod["metadata"]["name"])
            time.sleep(0.3)
        raise AssertionError(f"Job {job_name} did not reach {expect} within {timeout}s")

    # ---------------------------------------------------------------- serving pods
    def make_ready(self, namespace: str, pods: Iterable[dict[str, Any]]) -> None:
        """Let each serving pod's readiness probe pass (the kubelet then marks it Ready)."""
        for pod in pods:
            self.tell(namespace, pod, "serving", ["kubetrain-stub", "ready"])
