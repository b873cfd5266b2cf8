"""Fixtures the operator's platform test modules share (defined in test_operator_support.py).

Re-exported once here instead of in every module that needs them; a module that defines a
fixture of the same name (test_packaging_install.py's `crds`) keeps its own, as pytest prefers
module-level fixtures over conftest ones.
"""

from tests.platform.test_operator_support import (  # noqa: F401
    crds,
    k8s,
    operators,
    private_minio,
    s3,
    source,
    webhook_port,
)
