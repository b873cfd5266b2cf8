"""Pure parts of the platform manager: PKI, env file, port record."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from kubetrain_platform.certs import ensure_pki
from kubetrain_platform.envfile import read_env_file
from kubetrain_platform.platform import DEFAULT_PORTS, Platform


def test_pki_is_generated_once_and_chains(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki", {"admin": ("kubetrain-admin", "system:masters")})
    first = pki.ca_crt.read_bytes()
    again = ensure_pki(tmp_path / "pki", {"admin": ("kubetrain-admin", "system:masters")})
    assert again.ca_crt.read_bytes() == first
    ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
    crt, key = pki.client("admin")
    ctx.load_cert_chain(str(crt), str(key))  # raises if the key does not match
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert cert.issuer == x509.load_pem_x509_certificate(first).subject
    assert "O=system:masters" in cert.subject.rfc4514_string()
    server = x509.load_pem_x509_certificate(pki.apiserver_crt.read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert oct(pki.ca_key.stat().st_mode & 0o777) == "0o600"


def test_env_file_round_trips_awkward_values(tmp_path: Path) -> None:
    plat = Platform(tmp_path, ports="default", log=lambda _m: None)
    plat.record.minio_secret_key = 'it\'s $ecret "x"'
    plat._write_env()
    env = read_env_file(plat.env_path)
    assert env["MINIO_SECRET_KEY"] == 'it\'s $ecret "x"'
    assert env["MINIO_ENDPOINT"] == f"http://127.0.0.1:{DEFAULT_PORTS['minio']}"
    assert oct(plat.env_path.stat().st_mode & 0o777) == "0o600"


def test_ports_and_credentials_persist_per_state_dir(tmp_path: Path) -> None:
    a = Platform(tmp_path, ports="free", log=lambda _m: None)
    a._save_record()
    b = Platform(tmp_path, ports="default", log=lambda _m: None)
    assert b.record.ports == a.record.ports
    assert b.record.minio_secret_key == a.record.minio_secret_key


def test_a_port_in_use_is_named_before_anything_starts(tmp_path: Path) -> None:
    import socket

    import pytest
    from kubetrain_platform.platform import PlatformError, free_port

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        ports = {name: free_port() for name in DEFAULT_PORTS} | {"apiserver": port}
        plat = Platform(tmp_path, ports=ports, log=lambda _m: None)
        with pytest.raises(PlatformError, match=rf"port {port} \(apiserver\) is in use"):
            plat.check_ports()
    plat.check_ports()  # released: nothing to say
