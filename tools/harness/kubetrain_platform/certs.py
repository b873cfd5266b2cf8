"""PKI for the local control plane: one CA, serving and client certificates, SA keys.

Everything is generated once per state directory and reused on later starts, so
kubeconfigs and tokens handed out earlier stay valid across `platform-down`/`up`.
Client identities follow Kubernetes conventions: the CN is the user name, O the
groups (the admin is in `system:masters`; the controller-manager is the built-in
`system:kube-controller-manager` user that the bootstrap RBAC policy knows).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class Pki:
    """Paths of every key and certificate the platform uses."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server_names: list[str] | None = None,
    server_ips: list[str] | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
    )
    if server_names or server_ips:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names or []]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in server_ips or []]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _has_ips(path: Path, ips: list[str]) -> bool:
    """Whether the certificate at `path` names every IP in `ips` (a changed node network
    index, or a state dir from before the real node, needs a new certificate)."""
    if not path.exists():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return not ips
    have = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(ips) <= have


def ensure_pki(
    directory: Path,
    clients: dict[str, tuple[str, str | None]],
    *,
    apiserver_ips: list[str] | None = None,
    servers: dict[str, tuple[str, list[str]]] | None = None,
) -> Pki:
    """Create the CA, the apiserver cert, the SA key pair and client certs if missing.

    `clients` maps a file stem to (user name, group). `apiserver_ips` are the extra IPs the
    apiserver is reached on (the node's bridge address, the `kubernetes` Service IP);
    `servers` maps a file stem to (common name, IPs) of further serving certificates (the
    kubelet's). A certificate that lacks a requested IP is issued again.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pki = Pki(directory)
    if pki.ca_crt.exists() and pki.ca_key.exists():
        ca_cert = x509.load_pem_x509_certificate(pki.ca_crt.read_bytes())
        loaded = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("kubetrain-local-ca"))
            .issuer_name(_name("kubetrain-local-ca"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(pki.ca_key, ca_key)
        pki.ca_crt.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    api_ips = ["127.0.0.1", *(apiserver_ips or [])]
    if not _has_ips(pki.apiserver_crt, api_ips):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(
            _name("kube-apiserver"),
            key,
            ca_cert,
            ca_key,
            server_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            server_ips=api_ips,
        )
        _write_key(pki.apiserver_key, key)
        pki.apiserver_crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    for stem, (cn, ips) in (servers or {}).items():
        crt, keyfile = pki.client(stem)
        if _has_ips(crt, ips):
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(_name(cn), key, ca_cert, ca_key, server_names=[cn], server_ips=ips)
        _write_key(keyfile, key)
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    if not pki.sa_key.exists():
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(pki.sa_key, sa)
        pki.sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    for stem, (user, group) in clients.items():
        crt, keyfile = pki.client(stem)
        if crt.exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(_name(user, group), key, ca_cert, ca_key, client=True)
        _write_key(keyfile, key)
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki
