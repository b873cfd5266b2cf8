"""Settings: env and flags, validation naming the culprit, --help, secrets kept out."""

from __future__ import annotations

from dataclasses import fields

import pytest
from kubetrain_trainer.settings import (
    SettingsError,
    TrainerSettings,
    build_parser,
    load_settings,
)

BASE = {
    "KUBETRAIN_MANIFEST": "s3://data/.kubetrain/snapshots/ns-w/abc.json",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    "MINIO_ENDPOINT": "http://127.0.0.1:9000",
    "MINIO_ACCESS_KEY": "access",
    "MINIO_SECRET_KEY": "very-secret-value",
}


def test_env_is_read_and_converted() -> None:
    env = dict(
        BASE,
        KUBETRAIN_EPOCHS="7",
        KUBETRAIN_WARM_START="false",
        KUBETRAIN_TOLERANCE="0.01",
        KUBETRAIN_WATCH="ns/w",
        KUBETRAIN_CPU_LIMIT="1500m",
    )
    s = load_settings([], env)
    assert s.epochs == 7 and s.warm_start is False and s.tolerance == 0.01
    assert s.model_name == "kubetrain-ns-w" and s.experiment == "kubetrain-ns-w"
    assert s.manifest_location() == ("data", ".kubetrain/snapshots/ns-w/abc.json")


def test_flags_win_over_env() -> None:
    s = load_settings(["--epochs", "3", "--manifest", "s3://bkt/k.json"], dict(BASE))
    assert s.epochs == 3 and s.manifest == "s3://bkt/k.json"


@pytest.mark.parametrize(
    ("extra", "culprit"),
    [
        ({"KUBETRAIN_EPOCHS": "many"}, "KUBETRAIN_EPOCHS"),
        ({"KUBETRAIN_EPOCHS": "0"}, "KUBETRAIN_EPOCHS"),
        ({"KUBETRAIN_WARM_START": "maybe"}, "KUBETRAIN_WARM_START"),
        ({"KUBETRAIN_MIN_ACCURACY": "1.5"}, "KUBETRAIN_MIN_ACCURACY"),
        ({"KUBETRAIN_MANIFEST": "/local/file.json"}, "KUBETRAIN_MANIFEST"),
        ({"KUBETRAIN_MANIFEST": "s3://B_ad/k.json"}, "not a valid bucket"),
        ({"MINIO_ENDPOINT": "127.0.0.1:9000"}, "MINIO_ENDPOINT"),
        ({"KUBETRAIN_CPU_LIMIT": "lots"}, "KUBETRAIN_CPU_LIMIT"),
        ({"KUBETRAIN_WATCH": "no-slash"}, "KUBETRAIN_WATCH"),
        ({"MLFLOW_TRACKING_URI": ""}, "MLFLOW_TRACKING_URI"),
    ],
)
def test_bad_values_name_the_setting(extra: dict[str, str], culprit: str) -> None:
    with pytest.raises(SettingsError, match=culprit):
        load_settings([], dict(BASE, **extra))


def test_help_documents_every_field_and_env_var() -> None:
    text = build_parser().format_help()
    for f in fields(TrainerSettings):
        assert f.metadata["env"] in text or f.name == "minio_secret_key"
        if f.name != "minio_secret_key":
            assert "--" + f.name.replace("_", "-") in text
    assert "MINIO_SECRET_KEY" in text  # named in the epilog: environment only
    assert "--minio-secret-key" not in text


def test_secret_never_in_repr_or_params() -> None:
    s = load_settings([], dict(BASE))
    assert "very-secret-value" not in repr(s)
    assert "very-secret-value" not in str(s.public_params())
    assert "minio_secret_key" not in s.public_params()
    assert "minio_access_key" not in s.public_params() and "'access'" not in repr(s)


def test_every_field_has_a_docstring_in_source() -> None:
    import ast
    import inspect
    import textwrap

    cls = ast.parse(textwrap.dedent(inspect.getsource(TrainerSettings))).body[0]
    assert isinstance(cls, ast.ClassDef)
    documented = set()
    for stmt, nxt in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            documented.add(stmt.target.id)
    assert {f.name for f in fields(TrainerSettings)} == documented
