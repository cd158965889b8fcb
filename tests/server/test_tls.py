"""TLS: ``opsgate serve --tls-cert --tls-key`` for clients, and certificate checks on upstream calls."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opsgate.domain.config import ConfigError, parse_config
from tests.fake_upstream import FakeUpstream
from tests.support import free_port, start_gateway


@dataclass(frozen=True)
class Pki:
    """A private CA and a server certificate it signed for 127.0.0.1 / localhost."""

    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("opsgate test CA"))
        .issuer_name(_name("opsgate test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


def trusting(pki: Pki) -> ssl.SSLContext:
    """A client context that trusts the test CA."""
    return ssl.create_default_context(cafile=str(pki.ca))


# -- the gateway serving HTTPS ------------------------------------------------------------------------


@pytest.fixture()
def https_gateway(pki: Pki, tmp_path: Path, upstream: FakeUpstream) -> Iterator[str]:
    """``opsgate serve --tls-cert --tls-key`` as a real process; yields its https base URL."""
    config = tmp_path / "opsgate.yaml"
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
    config.write_text(
        yaml.safe_dump({"models": [{"name": "up", "deployments": [deployment]}], "record": {"store": None}})
    )
    port = free_port()
    command = [sys.executable, "-m", "opsgate.cli.main", "serve", "--config", str(config), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", verify=trusting(pki)).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (
            process.stderr.read().decode() if process.stderr else ""
        )
        time.sleep(0.05)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(30)


def test_openai_sdk_talks_https_to_the_gateway(https_gateway: str, pki: Pki) -> None:
    with httpx.Client(verify=trusting(pki)) as http:
        client = openai.OpenAI(base_url=https_gateway + "/v1", api_key="unused", http_client=http, max_retries=0)
        answer = client.chat.completions.create(model="up", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Hello from upstream"
    with httpx.Client() as untrusting:  # the system CAs do not know our test CA
        client = openai.OpenAI(base_url=https_gateway + "/v1", api_key="unused", http_client=untrusting, max_retries=0)
        with pytest.raises(openai.APIConnectionError):
            client.models.list()
    with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port gets no HTTP answer
        httpx.get(https_gateway.replace("https:", "http:") + "/healthz")


def test_serve_wants_both_tls_options(pki: Pki) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "opsgate.cli.main", "serve", "--tls-cert", str(pki.cert)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--tls-cert and --tls-key go together" in result.stderr


# -- upstream certificate checks ----------------------------------------------------------------------


class TlsUpstream(FakeUpstream):
    """The scripted fake upstream, served over HTTPS with the test CA's certificate."""

    def __init__(self, pki: Pki) -> None:
        super().__init__()
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(pki.cert, pki.key)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completion)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()


def test_upstream_with_a_private_ca_is_refused_unless_trusted(pki: Pki) -> None:
    upstream = TlsUpstream(pki).start()

    def alias(name: str, **tls: object) -> dict[str, object]:
        deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m", **tls}
        return {"name": name, "routing": {"retries": 0}, "deployments": [deployment]}

    config = {"models": [alias("default"), alias("trusted", verify_tls=str(pki.ca)), alias("off", verify_tls=False)]}
    gateway = start_gateway(config)
    try:

        def ask(model: str) -> httpx.Response:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            return httpx.post(gateway.base_url + "/chat/completions", json=body, timeout=30)

        refused = ask("default")
        assert refused.status_code == 502, refused.text
        error = refused.json()["error"]
        assert error["code"] == "upstream_tls_error" and "certificate verify failed" in error["message"]
        assert ask("trusted").status_code == 200
        assert ask("off").status_code == 200
        assert len(upstream.requests) == 2  # the refused call never sent its request
    finally:
        gateway.server.stop()
        upstream.stop()


def test_verify_tls_config_values(pki: Pki) -> None:
    def deployment(value: object) -> object:
        alias = {
            "name": "u",
            "deployments": [{"type": "openai", "base_url": "https://x/v1", "model": "m", "verify_tls": value}],
        }
        return parse_config({"models": [alias]}).models[0].deployments[0].verify_tls  # type: ignore[union-attr]

    assert deployment(True) is True and deployment("false") is False and deployment(str(pki.ca)) == str(pki.ca)
    with pytest.raises(ConfigError, match=r"models\[0\]\.deployments\[0\]\.verify_tls: .*does not exist"):
        deployment("/nowhere/ca.pem")
