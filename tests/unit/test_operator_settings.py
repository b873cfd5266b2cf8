"""Operator settings: the CLI, `--help`, env and docs are all generated from the fields."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
from kubetrain_operator import lifecycle
from kubetrain_operator.runtime import Runtime
from kubetrain_operator.settings import (
    GROUPS,
    OperatorSettings,
    Option,
    RolloutSettings,
    build_parser,
    load_settings,
    options,
    settings_help_table,
)

REPO = Path(__file__).resolve().parents[2]
OPTIONS = options()


def _get(s: OperatorSettings, path: tuple[str, ...]) -> Any:
    value: Any = s
    for part in path:
        value = getattr(value, part)
    return value


def _sample(o: Option) -> Any:
    """A valid value different from the default, of the option's type."""
    if o.kind == "bool":
        return not o.default
    if o.kind == "int":
        return o.default + 1
    if o.kind == "float":
        return o.default * 2
    if o.kind == "strs":
        return ("a", "b")
    if o.kind == "json":
        return {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}
    if o.meta["choices"]:
        return next(c for c in o.meta["choices"] if c != o.default)
    return o.default + "-x"


def _text(o: Option, value: Any) -> str:
    if o.kind == "strs":
        return ",".join(value)
    if o.kind == "json":
        return json.dumps(value)
    return str(value)


def test_every_field_is_an_option_or_derived() -> None:
    """No field escapes the table: each has a flag or an env var, or follows another field."""
    seen = {o.path for o in OPTIONS}

    def walk(cls: type, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        out = []
        for f in fields(cls):
            factory = f.default_factory
            if isinstance(factory, type) and is_dataclass(factory):
                out += walk(factory, (*prefix, f.name))
            elif not f.metadata.get("derived"):
                out.append((*prefix, f.name))
            else:
                assert f.metadata["derived"] in {g.name for g in fields(OperatorSettings)}
        return out

    assert walk(OperatorSettings, ()) == [o.path for o in OPTIONS]
    assert len(seen) == len(OPTIONS)
    assert {o.kind for o in OPTIONS} == {"bool", "int", "float", "str", "strs", "json"}
    # The limits that used to be constants in worker/runtime/lifecycle are settings now.
    for path in [
        ("max_watch_threads",),
        ("drain_limit",),
        ("worker_stuck_seconds",),
        ("rollout", "retry_seconds"),
        ("rollout", "check_seconds"),
    ]:
        assert path in seen, path


def test_every_flag_has_help_from_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100000")  # no wrapping: help texts appear verbatim
    parser = build_parser()
    actions = {a.dest: a for a in parser._actions}
    page = " ".join(parser.format_help().split())
    envs = [o.env for o in OPTIONS]
    assert len(set(envs)) == len(envs)
    for o in OPTIONS:
        assert o.help.strip(), o.path
        assert o.group in GROUPS, o.path
        if o.flag is None:  # env only (the webhook token): named in the epilog, never a flag
            assert o.path == ("webhook_token",)
            assert o.dest not in actions and f"{o.env}: {o.help}" in page
            continue
        action = actions[o.dest]
        assert o.flag in action.option_strings
        if o.meta["hidden"]:  # fault injection: parsed, but not advertised
            assert o.path == ("fault_exit_after",) and action.help == "==SUPPRESS=="
            assert o.flag not in page
            continue
        assert action.help and action.help.startswith(o.help)
        assert f"env {o.env}; default: {o.default_text()}" in action.help
        assert o.flag in page and o.help in page
    for title in GROUPS.values():
        assert f"{title}:" in page


@pytest.mark.parametrize("o", OPTIONS, ids=lambda o: o.dest)
def test_flag_and_env_round_trip(o: Option) -> None:
    value = _sample(o)
    assert value != o.default
    if o.kind == "strs":
        argv = [arg for v in value for arg in (o.flag or "", v)]
    elif o.kind == "bool":
        argv = [o.flag or ""]
    else:
        argv = [f"{o.flag}={_text(o, value)}"]
    if o.flag is not None:
        assert _get(load_settings(argv, {}), o.path) == value
        # The flag wins over the variable.
        other = _text(o, o.default) if o.kind != "strs" else "c"
        assert _get(load_settings(argv, {o.env: other}), o.path) == value
    assert _get(load_settings([], {o.env: _text(o, value)}), o.path) == value
    if o.kind == "bool":
        for text, expected in (("yes", True), ("0", False), ("", False)):
            assert _get(load_settings([], {o.env: text}), o.path) is expected
    if o.path not in (("namespaces",), ("priority",)):  # these get filled in at load
        assert _get(load_settings([], {}), o.path) == o.default


@pytest.mark.parametrize(
    "o", [o for o in OPTIONS if o.kind not in ("str", "strs")], ids=lambda o: o.dest
)
def test_a_malformed_value_names_the_setting(o: Option, capsys: pytest.CaptureFixture[str]) -> None:
    bad = "{" if o.kind == "json" else "maybe"
    with pytest.raises(ValueError, match=o.env):
        load_settings([], {o.env: bad})
    if o.kind != "bool" and o.flag is not None:
        with pytest.raises(SystemExit):
            load_settings([f"{o.flag}={bad}"], {})
        assert o.flag in capsys.readouterr().err


def test_limits_and_rollout_defaults_are_todays_values() -> None:
    s = OperatorSettings()
    assert (s.max_watch_threads, s.drain_limit, s.worker_stuck_seconds) == (64, 20000, 600.0)
    assert (s.rollout.retry_seconds, s.rollout.check_seconds) == (60.0, 15.0)
    assert s.rollout == RolloutSettings()
    assert RolloutSettings(default_image="x:1").default_image == "x:1"
    for name in ("max_watch_threads", "drain_limit", "worker_stuck_seconds"):
        with pytest.raises(ValueError, match=f"{name} must be > 0"):
            load_settings([f"--{name.replace('_', '-')}=0"], {})
    for name in ("retry_seconds", "check_seconds", "request_timeout_seconds", "conflict_retries"):
        with pytest.raises(ValueError, match=f"rollout_{name} must be > 0"):
            load_settings([f"--rollout-{name.replace('_', '-')}=0"], {})
    with pytest.raises(ValueError, match="JSON object"):
        load_settings([], {"KUBETRAIN_OPERATOR_ROLLOUT_DEFAULT_RESOURCES": '{"cpu": "1"}'})


def test_rollout_image_and_uid_follow_the_training_ones() -> None:
    s = load_settings(["--default-image", "img:1", "--trainer-uid", "2000"], {})
    assert (s.rollout.default_image, s.rollout.run_as_user) == ("img:1", 2000)
    s = OperatorSettings(default_image="img:2", rollout=RolloutSettings(default_image="other"))
    assert s.rollout.default_image == "img:2"
    assert replace(s, trainer_uid=3000).rollout.run_as_user == 3000


def _runtime(**changes: Any) -> Runtime:
    return Runtime(settings=replace(OperatorSettings(), **changes), kube=cast(Any, None))


def test_max_watch_threads_sizes_kopf_and_warns_when_all_are_in_use(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt = _runtime(max_watch_threads=2)
    kopf_settings = kopf.OperatorSettings()
    lifecycle.configure_kopf(kopf_settings, rt)
    assert kopf_settings.execution.max_workers == 2
    with caplog.at_level(logging.WARNING, logger="kubetrain.operator"):
        rt.report("ns/a", "Starting")
        assert not caplog.records
        rt.report("ns/b", "Starting")
        (record,) = caplog.records
        assert "all 2 watch threads are in use" in record.getMessage()
        assert "--max-watch-threads" in record.getMessage()
        rt.report("ns/b", "Running")  # an existing worker reporting again: no new warning
        assert len(caplog.records) == 1


def test_stuck_probe_uses_the_setting() -> None:
    rt = _runtime(worker_stuck_seconds=30.0)
    rt.report("ns/a", "Running")
    rt.workers["ns/a"].last_loop = time.time() - 20
    assert rt.probe()["watches"] == 1
    rt.workers["ns/a"].last_loop = time.time() - 40
    with pytest.raises(RuntimeError, match="stuck: ns/a"):
        rt.probe()


def test_docs_table_is_the_generated_one() -> None:
    """docs/operator.md lists every advertised setting with its env var, default and help."""
    doc = (REPO / "docs" / "operator.md").read_text()
    section = doc.split("## Settings (flags and env)", 1)[1].split("\n## ", 1)[0]
    rows = settings_help_table()
    assert {row[1] for row in rows} >= {o.flag for o in OPTIONS if not o.meta["hidden"]} - {None}
    for title, flag, env, default, text in rows:
        assert f"\n### {title}\n" in section, title
        assert f"| `{flag}` | `{env}` | `{default}` | {text} |" in section, flag


def test_settings_flags_env_defaults() -> None:
    s = load_settings([], {})
    assert s.namespaces == ("default",) and s.health_port == 8080 and s.metrics_port == 9090
    assert s.priority > 0
    s = load_settings(
        ["-n", "a", "-n", "b", "--metrics-port", "0"],
        {"KUBETRAIN_OPERATOR_METRICS_PORT": "1", "KUBETRAIN_OPERATOR_STANDALONE": "true"},
    )
    assert s.namespaces == ("a", "b") and s.metrics_port == 0 and s.standalone
    s = load_settings([], {"KUBETRAIN_OPERATOR_NAMESPACES": "x, y", "POD_NAMESPACE": "z"})
    assert s.namespaces == ("x", "y")
    assert load_settings([], {"POD_NAMESPACE": "z"}).namespaces == ("z",)
    with pytest.raises(ValueError, match="KUBETRAIN_OPERATOR_HEALTH_PORT"):
        load_settings([], {"KUBETRAIN_OPERATOR_HEALTH_PORT": "http"})
    # Training and serving pods must stay PodSecurity "restricted": never UID 0.
    assert load_settings(["--trainer-uid", "2000"], {}).trainer_uid == 2000
    with pytest.raises(ValueError, match="trainer_uid must be a non-root UID"):
        load_settings(["--trainer-uid", "0"], {})
    with pytest.raises(ValueError, match="mutually exclusive"):
        load_settings(
            [], {"KUBETRAIN_OPERATOR_NAMESPACES": "a", "KUBETRAIN_OPERATOR_ALL_NAMESPACES": "1"}
        )


def test_every_setting_has_a_flag() -> None:
    """The settings module promises a CLI flag per field (namespaces is -n/--namespace;
    the webhook token is env-only so it never shows in a process list; the nested rollout
    settings are --rollout-<field>, except the image and UID, which follow --default-image
    and --trainer-uid)."""
    from dataclasses import fields

    from kubetrain_operator.settings import OperatorSettings, RolloutSettings, build_parser

    options = {o for action in build_parser()._actions for o in action.option_strings}
    missing = [
        f.name
        for f in fields(OperatorSettings)
        if "--" + f.name.replace("_", "-") not in options
        and f.name not in ("namespaces", "webhook_token", "rollout")
    ]
    missing += [
        f"rollout.{f.name}"
        for f in fields(RolloutSettings)
        if "--rollout-" + f.name.replace("_", "-") not in options
        and f.name not in ("default_image", "run_as_user")
    ]
    assert missing == []
    assert "--namespace" in options
    s = load_settings(["--source-settle-seconds", "2.5"], {})
    assert s.source_settle_seconds == 2.5
    with pytest.raises(ValueError, match="source_settle_seconds must be > 0"):
        load_settings([], {"KUBETRAIN_OPERATOR_SOURCE_SETTLE_SECONDS": "0"})
