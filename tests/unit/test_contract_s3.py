"""kubetrain_contract.s3: the one way every component reaches MinIO.

Endpoint parsing (accepted shapes, normalisation, every refusal naming the setting and the
value but never a credential), the S3Connection value (validation, repr, minio kwargs),
reading it from a Kubernetes Secret and from the environment, and the call sites: each
product package wraps the errors in its own type and creates MinIO clients in one place.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubetrain_contract import s3
from kubetrain_contract.s3 import S3ConfigError, S3Connection, parse_endpoint

REPO = Path(__file__).resolve().parents[2]
ACCESS = "AKIA-access-id"
SECRET = "s3cr3t-value-never-shown"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_object(**data: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "data": data}


GOOD_SECRET = secret_object(accessKey=b64(ACCESS), secretKey=b64(SECRET))

# ------------------------------------------------------------------------------ endpoints


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("https://minio.example:443", "https://minio.example:443"),
        ("http://minio.ml:9000/", "http://minio.ml:9000"),
        ("https://minio.example", "https://minio.example"),
        ("http://minio", "http://minio"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("http://h:1", "http://h:1"),
        ("http://h:65535", "http://h:65535"),
    ],
)
def test_valid_endpoints_are_normalised(value: str, normalised: str) -> None:
    assert parse_endpoint(value) == normalised
    assert parse_endpoint(normalised) == normalised  # idempotent


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "must be http://host:port or https://host:port"),
        ("127.0.0.1:9000", "must be http://host:port or https://host:port"),
        ("minio:9000", "must be http://host:port or https://host:port"),
        ("ftp://minio:21", "must be http://host:port or https://host:port"),
        ("s3://bucket/key", "must be http://host:port or https://host:port"),
        ("HTTP://minio:9000", "must be http://host:port or https://host:port"),
        ("http:/minio:9000", "must be http://host:port or https://host:port"),
        ("http://minio:9000/data", "has a path, query or fragment"),
        ("http://minio:9000//", "has a path, query or fragment"),
        ("http://minio:9000?region=x", "has a path, query or fragment"),
        ("http://minio:9000?", "has a path, query or fragment"),
        ("http://minio:9000#top", "has a path, query or fragment"),
        ("http://:9000", "has no host"),
        ("http://", "has no host"),
        ("http://minio:", "has an invalid port"),
        ("http://minio:0", "has an invalid port"),
        ("http://minio:65536", "has an invalid port"),
        ("http://minio:port", "has an invalid port"),
        ("http://minio:+9000", "has an invalid port"),
        ("http://minio:9000;x", "has an invalid port"),
        ("http://[::1", "is not a valid URL"),
        (" http://minio:9000", "must not contain whitespace"),
        ("http://minio:9000 ", "must not contain whitespace"),
        ("http://minio:9000\n", "must not contain whitespace"),
        ("http://mi nio:9000", "must not contain whitespace"),
        ("http://minio\x00:9000", "must not contain whitespace"),
    ],
)
def test_bad_endpoints_name_the_setting_and_the_value(value: str, problem: str) -> None:
    with pytest.raises(S3ConfigError) as exc:
        parse_endpoint(value, "spec.source.endpoint")
    message = str(exc.value)
    assert message.startswith(f"spec.source.endpoint: {value!r} "), message
    assert problem in message
    assert "\n" not in message


def test_the_default_setting_name() -> None:
    with pytest.raises(S3ConfigError, match=r"^S3 endpoint: 'minio:9000' must be"):
        parse_endpoint("minio:9000")


@pytest.mark.parametrize(
    "value",
    [
        "http://alice:hunter2@s3host:9000",
        "https://hunter2@s3host",
        "ftp://alice:hunter2@s3host/path",
        "alice:hunter2@s3host:9000",
        "http://alice:hunter2@s3host:9000/x?y#z",
    ],
)
def test_endpoints_with_credentials_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(S3ConfigError) as exc:
        parse_endpoint(value, "MINIO_ENDPOINT")
    message = str(exc.value)
    assert message.startswith("MINIO_ENDPOINT must not contain credentials"), message
    assert all(part not in message for part in ("alice", "hunter2", "s3host"))


def test_a_non_string_endpoint_is_refused() -> None:
    with pytest.raises(S3ConfigError, match=r"^X: expected a string, got int$"):
        parse_endpoint(9000, "X")  # type: ignore[arg-type]


def test_the_error_type_is_a_value_error() -> None:
    assert issubclass(S3ConfigError, ValueError)


# ------------------------------------------------------------------------------ S3Connection


def test_connection_fields_and_derived_values() -> None:
    conn = S3Connection("http://minio.ml:9000/", ACCESS, SECRET)
    assert conn.endpoint == "http://minio.ml:9000"
    assert (conn.host, conn.secure) == ("minio.ml:9000", False)
    assert (conn.access_key, conn.secret_key) == (ACCESS, SECRET)
    tls = S3Connection("https://[::1]:8443", ACCESS, SECRET)
    assert (tls.host, tls.secure) == ("[::1]:8443", True)
    assert S3Connection("http://minio.ml:9000", ACCESS, SECRET) == conn


def test_minio_kwargs_are_exactly_what_minio_takes() -> None:
    conn = S3Connection("https://minio.example:9443", ACCESS, SECRET)
    kwargs = conn.minio_kwargs()
    assert kwargs == {
        "endpoint": "minio.example:9443",
        "access_key": ACCESS,
        "secret_key": SECRET,
        "secure": True,
    }
    assert conn.minio_kwargs() is not kwargs  # a fresh dict: callers may add to it

    from minio import Minio

    inspect.signature(Minio).bind(**kwargs, http_client=None)
    client = Minio(**kwargs)
    assert (client._base_url.host, client._base_url.is_https) == ("minio.example:9443", True)
    plain = Minio(**S3Connection("http://127.0.0.1:9000", ACCESS, SECRET).minio_kwargs())
    assert (plain._base_url.host, plain._base_url.is_https) == ("127.0.0.1:9000", False)


def test_repr_and_str_never_show_the_keys() -> None:
    conn = S3Connection("http://minio:9000", ACCESS, SECRET)
    for text in (repr(conn), str(conn), f"{conn}", repr([conn]), repr({"c": conn})):
        assert ACCESS not in text and SECRET not in text, text
    assert repr(conn) == "S3Connection(endpoint='http://minio:9000')"
    shown = {f.name: f.repr for f in dataclasses.fields(S3Connection)}
    assert shown == {"endpoint": True, "access_key": False, "secret_key": False}


def test_connection_is_immutable() -> None:
    conn = S3Connection("http://minio:9000", ACCESS, SECRET)
    with pytest.raises(dataclasses.FrozenInstanceError):
        conn.endpoint = "http://other:9000"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("access", "secret", "message"),
    [
        ("", SECRET, "the S3 access key is empty"),
        (ACCESS, "", "the S3 secret key is empty"),
        ("", "", "the S3 access key is empty"),
    ],
)
def test_empty_keys_are_refused(access: str, secret: str, message: str) -> None:
    with pytest.raises(S3ConfigError) as exc:
        S3Connection("http://minio:9000", access, secret)
    assert str(exc.value) == message


def test_a_bad_endpoint_is_refused_by_the_constructor_without_the_keys() -> None:
    with pytest.raises(S3ConfigError) as exc:
        S3Connection("minio:9000", ACCESS, SECRET)
    assert str(exc.value) == (
        "S3 endpoint: 'minio:9000' must be http://host:port or https://host:port"
    )


# ------------------------------------------------------------------------------ from a Secret


def test_from_secret_decodes_the_base64_data() -> None:
    conn = S3Connection.from_secret("https://minio:9000/", GOOD_SECRET, "ns/creds")
    assert conn == S3Connection("https://minio:9000", ACCESS, SECRET)
    as_bytes = secret_object(accessKey=b64(ACCESS).encode(), secretKey=b64(SECRET).encode())
    assert S3Connection.from_secret("https://minio:9000", as_bytes, "ns/creds") == conn
    unicode = secret_object(accessKey=b64("ключ"), secretKey=b64("секрет"))
    conn = S3Connection.from_secret("http://m:1", unicode, "c")
    assert (conn.access_key, conn.secret_key) == ("ключ", "секрет")


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ({}, "Secret 'ns/creds' has no key 'accessKey'"),
        ({"data": None}, "Secret 'ns/creds' has no key 'accessKey'"),
        ({"data": {}}, "Secret 'ns/creds' has no key 'accessKey'"),
        ({"data": ["accessKey"]}, "Secret 'ns/creds' has no data"),
        (secret_object(secretKey=b64(SECRET)), "Secret 'ns/creds' has no key 'accessKey'"),
        (secret_object(accessKey=b64(ACCESS)), "Secret 'ns/creds' has no key 'secretKey'"),
        (
            secret_object(accessKey=b64(ACCESS), secretKey=""),
            "Secret 'ns/creds' has no key 'secretKey'",
        ),
        (
            secret_object(access_key=b64(ACCESS), secret_key=b64(SECRET)),
            "Secret 'ns/creds' has no key 'accessKey'",
        ),
        (
            secret_object(accessKey=ACCESS + "!", secretKey=b64(SECRET)),
            "Secret 'ns/creds' key 'accessKey' is not valid base64 text",
        ),
        (
            secret_object(accessKey=b64(ACCESS), secretKey="c2VjcmV0"[:-1]),
            "Secret 'ns/creds' key 'secretKey' is not valid base64 text",
        ),
        (
            secret_object(accessKey=b64(ACCESS), secretKey="ключ"),
            "Secret 'ns/creds' key 'secretKey' is not valid base64 text",
        ),
        (
            secret_object(accessKey=b64(ACCESS), secretKey=base64.b64encode(b"\xff\xfe").decode()),
            "Secret 'ns/creds' key 'secretKey' is not valid base64 text",
        ),
        (
            secret_object(accessKey=12345, secretKey=b64(SECRET)),
            "Secret 'ns/creds' key 'accessKey' is not valid base64 text",
        ),
        (
            secret_object(accessKey=b64(ACCESS), secretKey="===="),
            "Secret 'ns/creds' key 'secretKey' is not valid base64 text",
        ),
    ],
)
def test_from_secret_names_the_secret_and_the_key(secret: dict[str, Any], message: str) -> None:
    with pytest.raises(S3ConfigError) as exc:
        S3Connection.from_secret("http://minio:9000", secret, "ns/creds")
    assert str(exc.value) == message
    # No chained decoding error (whose text could quote the data) travels with it.
    assert exc.value.__cause__ is None
    assert exc.value.__context__ is None or exc.value.__suppress_context__


def test_from_secret_never_puts_a_key_in_an_error() -> None:
    cases = [
        secret_object(accessKey=b64(ACCESS), secretKey=SECRET + "!"),
        secret_object(accessKey=b64(ACCESS), secretKey=b64(SECRET)[:-1]),
        secret_object(accessKey=b64(ACCESS)),
    ]
    for secret in cases:
        with pytest.raises(S3ConfigError) as exc:
            S3Connection.from_secret("http://minio:9000", secret, "ns/creds")
        assert ACCESS not in str(exc.value) and SECRET not in str(exc.value)
        assert b64(ACCESS) not in str(exc.value) and b64(SECRET)[:-1] not in str(exc.value)


def test_from_secret_checks_the_endpoint_too() -> None:
    with pytest.raises(S3ConfigError, match=r"'minio:9000' must be http://host:port"):
        S3Connection.from_secret("minio:9000", GOOD_SECRET, "ns/creds")


# ------------------------------------------------------------------------------ from the environment

ENV = {
    "MINIO_ENDPOINT": "http://127.0.0.1:9000",
    "MINIO_ACCESS_KEY": ACCESS,
    "MINIO_SECRET_KEY": SECRET,
}


def test_env_names_are_the_trainer_contract_names() -> None:
    assert tuple(ENV) == (s3.ENDPOINT_ENV, s3.ACCESS_KEY_ENV, s3.SECRET_KEY_ENV)
    assert (s3.SECRET_ACCESS_KEY, s3.SECRET_SECRET_KEY) == ("accessKey", "secretKey")


def test_from_env_reads_the_three_variables() -> None:
    assert S3Connection.from_env(ENV) == S3Connection("http://127.0.0.1:9000", ACCESS, SECRET)


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert S3Connection.from_env() == S3Connection.from_env(ENV)


def test_explicit_values_win_over_the_environment() -> None:
    conn = S3Connection.from_env(
        ENV, endpoint="https://other:9443/", access_key="flag-access", secret_key="flag-secret"
    )
    assert conn == S3Connection("https://other:9443", "flag-access", "flag-secret")
    # None and "" mean "not given": the variable is used.
    assert S3Connection.from_env(ENV, endpoint=None, access_key="") == S3Connection.from_env(ENV)
    partial = S3Connection.from_env(
        {"MINIO_SECRET_KEY": SECRET}, endpoint="http://m:1", access_key="a"
    )
    assert partial == S3Connection("http://m:1", "a", SECRET)


def test_from_env_lists_everything_missing_in_one_error() -> None:
    with pytest.raises(S3ConfigError) as exc:
        S3Connection.from_env({})
    assert str(exc.value) == (
        "MinIO settings missing: MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY"
    )
    with pytest.raises(S3ConfigError) as exc:
        S3Connection.from_env({**ENV, "MINIO_SECRET_KEY": ""})
    assert str(exc.value) == "MinIO settings missing: MINIO_SECRET_KEY"


def test_flags_are_named_next_to_their_variables() -> None:
    flags = {"MINIO_ENDPOINT": "--endpoint", "MINIO_ACCESS_KEY": "--access-key"}
    with pytest.raises(S3ConfigError) as exc:
        S3Connection.from_env({}, flags=flags)
    assert str(exc.value) == (
        "MinIO settings missing: --endpoint / MINIO_ENDPOINT, --access-key / MINIO_ACCESS_KEY, "
        "MINIO_SECRET_KEY"
    )
    with pytest.raises(S3ConfigError) as exc:
        S3Connection.from_env({**ENV, "MINIO_ENDPOINT": "127.0.0.1:9000"}, flags=flags)
    assert str(exc.value) == (
        "--endpoint / MINIO_ENDPOINT: '127.0.0.1:9000' must be http://host:port or "
        "https://host:port"
    )


def test_from_env_never_echoes_an_endpoint_with_credentials() -> None:
    env = {**ENV, "MINIO_ENDPOINT": "http://user:hunter2@minio:9000"}
    with pytest.raises(S3ConfigError) as exc:
        S3Connection.from_env(env)
    assert "hunter2" not in str(exc.value)
    assert str(exc.value).startswith("MINIO_ENDPOINT must not contain credentials")


# ------------------------------------------------------------------------------ stdlib only


def test_the_module_imports_in_an_interpreter_without_site_packages() -> None:
    # -I -S: no site-packages, no user site, no PYTHON* variables; only the stdlib + operator/.
    script = f"""
import json, sys
before = set(sys.modules)
sys.path.insert(0, {str(REPO / "operator")!r})
from kubetrain_contract.s3 import S3Connection
c = S3Connection.from_env({{"MINIO_ENDPOINT": "https://h:1/", "MINIO_ACCESS_KEY": "a",
                            "MINIO_SECRET_KEY": "b"}})
assert c.minio_kwargs() == {{"endpoint": "h:1", "access_key": "a", "secret_key": "b",
                             "secure": True}}
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert "kubetrain_contract.s3" in loaded
    outside = sorted(
        name
        for name in loaded
        if name.split(".")[0] not in sys.stdlib_module_names
        and name not in ("kubetrain_contract", "kubetrain_contract.s3")
    )
    assert outside == [], f"importing kubetrain_contract.s3 loaded non-stdlib modules: {outside}"


# ------------------------------------------------------------------------------ the call sites


def minio_calls(path: Path) -> list[int]:
    """Line numbers of calls `Minio(...)` / `x.Minio(...)` in one file."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "Minio":
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    ("package", "expected"),
    [
        ("operator/kubetrain_operator", ["objectstore.py"]),
        ("operator/kubetrain_contract", []),
        ("trainer/kubetrain_trainer", ["snapshot.py"]),
        ("serving/kubetrain_serving", []),
        ("tools/kubetrain_data", ["s3util.py"]),
    ],
)
def test_each_product_package_creates_minio_clients_in_one_place(
    package: str, expected: list[str]
) -> None:
    calls = {
        str(path.relative_to(REPO / package)): lines
        for path in sorted((REPO / package).rglob("*.py"))
        if (lines := minio_calls(path))
    }
    assert sorted(calls) == expected, calls
    assert all(len(lines) == 1 for lines in calls.values()), calls


def test_operator_source_secret_errors_are_source_errors() -> None:
    from kubetrain_operator.objectstore import SourceError, connection_from_secret
    from kubetrain_operator.spec import SourceSpec

    source = SourceSpec("http://minio:9000", "bucket", "", "*.png", "creds")
    conn = connection_from_secret(source, GOOD_SECRET)
    assert conn == S3Connection("http://minio:9000", ACCESS, SECRET)
    with pytest.raises(SourceError) as exc:
        connection_from_secret(source, secret_object(accessKey=b64(ACCESS)))
    assert exc.value.reason == "CredentialsInvalid"
    assert exc.value.message == "Secret 'creds' has no key 'secretKey'"


def test_operator_clients_get_the_connection_and_the_pool() -> None:
    import urllib3
    from kubetrain_operator.objectstore import ObjectStore, new_client
    from kubetrain_operator.spec import SourceSpec

    conn = S3Connection("https://minio:9443", ACCESS, SECRET)
    http = urllib3.PoolManager()
    client = new_client(conn, http)
    assert client._http is http
    assert (client._base_url.host, client._base_url.is_https) == ("minio:9443", True)
    store = ObjectStore(SourceSpec("https://minio:9443", "b", "", "*", "c"), conn, timeout=7.0)
    assert store.conn is conn and store.client._base_url.host == "minio:9443"
    assert store.client._provider.retrieve().secret_key == SECRET


class FakeKube:
    def __init__(self, secret: dict[str, Any] | None) -> None:
        self.secret = secret
        self.paths: list[str] = []

    def get(self, path: str) -> dict[str, Any] | None:
        self.paths.append(path)
        return self.secret


def serving_target(endpoint: str = "http://minio.ml:9000") -> Any:
    return SimpleNamespace(
        watch=SimpleNamespace(namespace="ml", name="digits"),
        credentials_secret="creds",
        endpoint=endpoint,
    )


def test_rollout_bento_store_reads_the_secret_through_the_contract() -> None:
    from kubetrain_operator.serving_rollout import RolloutError
    from kubetrain_operator.serving_rollout.bentos import MinioBentoStore

    kube = FakeKube(GOOD_SECRET)
    store = MinioBentoStore.from_secret(kube, serving_target(), timeout=12.0)  # type: ignore[arg-type]
    assert kube.paths == ["/api/v1/namespaces/ml/secrets/creds"]
    assert (store.client._base_url.host, store.client._base_url.is_https) == (
        "minio.ml:9000",
        False,
    )
    with pytest.raises(RolloutError) as exc:
        MinioBentoStore.from_secret(
            FakeKube(secret_object(secretKey=b64(SECRET))),  # type: ignore[arg-type]
            serving_target(),
            timeout=12.0,
        )
    assert str(exc.value) == (
        "Secret 'ml/creds' has no key 'accessKey' (spec.source.credentialsSecretRef)"
    )
    with pytest.raises(RolloutError, match=r"Secret ml/creds .* not found"):
        MinioBentoStore.from_secret(FakeKube(None), serving_target(), timeout=1.0)  # type: ignore[arg-type]


def test_spec_parsers_use_the_contract_endpoint_rules() -> None:
    from kubetrain_operator.spec import SpecError, parse_watch

    body = {
        "metadata": {"name": "w", "namespace": "ns", "uid": "u"},
        "spec": {
            "source": {
                "endpoint": "http://minio:9000/",
                "bucket": "data",
                "credentialsSecretRef": {"name": "creds"},
            }
        },
    }
    assert parse_watch(body).source.endpoint == "http://minio:9000"
    for bad, problem in (
        ("http://minio:9000?x=1", "has a path, query or fragment"),
        ("http://minio:abc", "has an invalid port"),
    ):
        body["spec"]["source"]["endpoint"] = bad  # type: ignore[index]
        with pytest.raises(SpecError) as exc:
            parse_watch(body)
        assert str(exc.value).startswith(f"spec.source.endpoint: {bad!r} {problem}")
    body["spec"]["source"]["endpoint"] = "http://u:hunter2@minio:9000"  # type: ignore[index]
    with pytest.raises(SpecError) as exc:
        parse_watch(body)
    assert "hunter2" not in str(exc.value) and "spec.source.endpoint" in str(exc.value)


def test_trainer_settings_build_the_connection() -> None:
    from kubetrain_trainer.settings import SettingsError, load_settings

    env = {
        "KUBETRAIN_MANIFEST": "s3://data/.kubetrain/snapshots/ns-w/abc.json",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "MINIO_ENDPOINT": "https://minio:9443/",
        "MINIO_ACCESS_KEY": ACCESS,
        "MINIO_SECRET_KEY": SECRET,
    }
    s = load_settings([], env)
    assert s.s3_connection() == S3Connection("https://minio:9443", ACCESS, SECRET)
    with pytest.raises(SettingsError) as exc:
        load_settings([], {k: v for k, v in env.items() if k != "MINIO_SECRET_KEY"})
    assert str(exc.value) == "MinIO settings missing: MINIO_SECRET_KEY"
    with pytest.raises(SettingsError) as exc:
        load_settings(["--minio-access-key", ""], {**env, "MINIO_ACCESS_KEY": ""})
    assert str(exc.value) == "MinIO settings missing: --minio-access-key / MINIO_ACCESS_KEY"
    with pytest.raises(SettingsError) as exc:
        load_settings([], {**env, "MINIO_ENDPOINT": "http://minio:9000/bucket"})
    assert str(exc.value).startswith(
        "--minio-endpoint / MINIO_ENDPOINT: 'http://minio:9000/bucket' has a path"
    )
    with pytest.raises(SettingsError) as exc:
        load_settings([], {**env, "MINIO_ENDPOINT": "http://a:hunter2@minio:9000"})
    assert "hunter2" not in str(exc.value)


def test_trainer_client_uses_the_connection() -> None:
    from kubetrain_trainer.snapshot import make_client

    client = make_client(S3Connection("https://minio:9443", ACCESS, SECRET), pool_size=2)
    assert (client._base_url.host, client._base_url.is_https) == ("minio:9443", True)
    assert client._provider.retrieve().access_key == ACCESS


def test_data_settings_are_a_connection() -> None:
    from kubetrain_data import s3util
    from kubetrain_data.errors import DataError
    from kubetrain_data.settings import S3Settings

    s = S3Settings.load(None, None, None, ENV)
    assert isinstance(s, S3Connection) and type(s) is S3Settings
    assert s == S3Settings("http://127.0.0.1:9000", ACCESS, SECRET)
    assert repr(s) == "S3Settings(endpoint='http://127.0.0.1:9000')"
    with pytest.raises(DataError) as exc:
        S3Settings.load(None, "flag-access", None, {})
    assert str(exc.value) == (
        "MinIO settings missing: --endpoint / MINIO_ENDPOINT, --secret-key / MINIO_SECRET_KEY"
    )
    client = s3util.client(s, workers=3)
    assert (client._base_url.host, client._base_url.is_https) == ("127.0.0.1:9000", False)
