"""kubetrain_contract imports only the standard library.

The trainer image carries the contract without the operator, and both sides must be able to
import it with nothing else installed. Two checks: every import statement in the package
(including ones inside functions) names a standard-library module, and importing it in an
isolated interpreter without site-packages loads nothing but the standard library.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "kubetrain_contract"


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in a file (relative imports excluded)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert node.module, f"{path}: from-import without a module"
            names.add(node.module)
    return names


def test_every_import_statement_names_the_standard_library() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "__init__.py" in files
    for path in files:
        imports = imported_modules(path)
        assert imports, f"{path}: no imports found (is the parser looking at the right file?)"
        outside = sorted(
            name for name in imports if name.split(".")[0] not in sys.stdlib_module_names
        )
        assert outside == [], f"{path.relative_to(REPO)} imports non-stdlib modules: {outside}"


def test_imports_in_an_isolated_interpreter_without_site_packages() -> None:
    # -I: ignore PYTHON* env vars and the user site, no script dir on sys.path;
    # -S: no `site`, so no site-packages at all. Only the stdlib and operator/ remain.
    script = f"""
import json, sys
before = set(sys.modules)
sys.path.insert(0, {str(PACKAGE.parent)!r})
import kubetrain_contract as c
m = c.SnapshotManifest(watch="ns/w", bucket="b", prefix="data/", objects={{"data/0/a.png": "e"}})
assert c.SnapshotManifest.from_json(m.to_json()) == m
assert c.TrainResult.from_message(c.TrainResult(status="succeeded").to_message()).status
print(json.dumps({{
    "file": c.__file__,
    "site": "site" in sys.modules,
    "new": sorted(set(sys.modules) - before),
}}))
"""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert Path(report["file"]) == PACKAGE / "__init__.py"
    assert report["site"] is False, "site-packages were reachable"
    assert "kubetrain_contract" in report["new"]
    outside = sorted(
        name
        for name in report["new"]
        if name.split(".")[0] not in sys.stdlib_module_names and name != "kubetrain_contract"
    )
    assert outside == [], f"importing kubetrain_contract loaded non-stdlib modules: {outside}"
