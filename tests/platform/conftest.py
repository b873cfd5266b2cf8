"""Fixtures shared by the platform test modules.

The operator's (defined in tests/support/operator.py) are re-exported once here instead of in
every module that needs them; a module that defines a fixture of the same name
(test_packaging_install.py's `crds`) keeps its own, as pytest prefers module-level fixtures
over conftest ones. The dataset tools' two fixtures are defined here.
"""

from pathlib import Path
from typing import Any

import pytest

from tests.support.data import make_dataset, use_platform_minio
from tests.support.operator import (  # noqa: F401
    crds,
    k8s,
    operators,
    private_minio,
    s3,
    source,
    stub,
    webhook_port,
)


@pytest.fixture
def s3env(platform: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """MINIO_* of the shared platform in the environment, as `kubetrain-data` reads them."""
    return use_platform_minio(platform, monkeypatch)


@pytest.fixture
def dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """60 real digits as OUT/<label>/<hash>.png (6 per label)."""
    return make_dataset(tmp_path, capsys)
