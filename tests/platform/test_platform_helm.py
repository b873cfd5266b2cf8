"""helm (built from source) renders a chart that the real apiserver accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.platform


def test_helm_template_server_side_dry_run(platform, namespace: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    (chart / "templates" / "bad.yaml").write_text(
        "{{- if .Values.broken }}\napiVersion: v1\nkind: Service\nmetadata:\n  name: x\n"
        "spec:\n  ports:\n  - port: 99999\n{{- end }}\n"
    )
    rendered = subprocess.run(
        [platform.tool("helm"), "template", "demo", str(chart), "--namespace", namespace],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "name: demo-cm" in rendered
    kubectl = [platform.tool("kubectl"), "--kubeconfig", platform.kubeconfig, "-n", namespace]
    ok = subprocess.run(
        [*kubectl, "apply", "--dry-run=server", "-f", "-"],
        input=rendered,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "configmap/demo-cm created (server dry run)" in ok.stdout
    # The dry run is a real admission check: an invalid object is refused by the apiserver.
    broken = subprocess.run(
        [platform.tool("helm"), "template", "demo", str(chart), "--set", "broken=true"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    bad = subprocess.run(
        [*kubectl, "apply", "--dry-run=server", "-f", "-"],
        input=broken,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    assert "99999" in bad.stderr
    # Nothing was persisted by either dry run.
    get = subprocess.run([*kubectl, "get", "configmap", "demo-cm"], capture_output=True, text=True)
    assert get.returncode != 0 and "NotFound" in get.stderr
