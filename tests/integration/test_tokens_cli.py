"""``modelport tokens`` and the safe serving defaults, as a user runs them: real subprocesses, a tmp state dir.

Nothing here binds anything but 127.0.0.1: the non-loopback refusals run under a guard that fails on any bind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from server.ops.authdb import AuthDB
from server.ops.identity import Level
from server.ops.tokens import TokenStore
from server.tokens_cli import parse_duration, parse_grants
from tests.conftest import DemoRegistry
from tests.processes import free_port, wait_for

CLI = [sys.executable, "-m", "server"]

# Runs the CLI in a process where any bind() fails loudly, then reports which heavy modules it imported.
GUARDED = """
import socket, sys
def refuse(*args, **kwargs):
    raise SystemExit("BIND ATTEMPTED")
socket.socket.bind = refuse
from server.cli import main
rc = main(sys.argv[1:])
heavy = ("mlflow", "uvicorn", "fastapi", "starlette", "mcp", "onnxruntime", "numpy", "registry", "server.main")
print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules), file=sys.stderr)
raise SystemExit(rc)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env or _env(), check=False)


def _guarded(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", GUARDED, *args], capture_output=True, text=True, timeout=60, env=_env(), check=False
    )


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def _create(state: Path, *args: str) -> str:
    r = _run("tokens", "create", *args, "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and r.stdout == lines[0] + "\n", r.stdout  # the token and only the token
    assert lines[0].startswith("mp_") and len(lines[0]) > 40
    return lines[0]


def test_create_prints_only_the_token_which_the_store_verifies(state: Path) -> None:
    admin = _create(state, "alice", "--admin")
    bot = _create(
        state, "bot", "--grant", "fraud_detector=query", "--grant", "models:/sales_forecast=CAN_VIEW",
        "--expires-in", "30d", "--principal", "svc-ci", "--service-principal",
    )  # fmt: skip
    db = AuthDB(state / "auth.db")
    try:
        store = TokenStore(db)
        alice = store.verify(admin)
        assert alice is not None and alice.name == "alice" and alice.admin and alice.kind == "user"
        svc = store.verify(bot)
        assert svc is not None and svc.name == "svc-ci" and svc.kind == "service_principal" and not svc.admin
        assert svc.grants == {"fraud_detector": Level.CAN_QUERY, "models:/sales_forecast": Level.CAN_VIEW}
        expected = (datetime.now(UTC) + timedelta(days=30)).timestamp()
        assert svc.expires_at == pytest.approx(expected, abs=60)
    finally:
        db.close()
    assert (state / "auth.db").stat().st_mode & 0o077 == 0


def test_list_shows_tokens_but_never_their_secrets(state: Path) -> None:
    empty = _run("tokens", "list", "--state-dir", str(state))
    assert empty.returncode == 0 and "no tokens" in empty.stdout
    assert not state.exists()  # listing creates nothing
    assert json.loads(_run("tokens", "list", "--json", "--state-dir", str(state)).stdout) == []
    secrets = [
        _create(state, "alice", "--admin"),
        _create(state, "bot", "--grant", "*=CAN_QUERY", "--expires-in", "12h", "--service-principal"),
    ]
    human = _run("tokens", "list", "--state-dir", str(state))
    assert human.returncode == 0, human.stderr
    header, *rows = human.stdout.splitlines()
    assert header.split() == ["NAME", "PRINCIPAL", "KIND", "ADMIN", "GRANTS", "CREATED", "LAST", "USED", "EXPIRES"]
    assert [row.split()[:5] for row in rows] == [
        ["alice", "alice", "user", "yes", "-"],
        ["bot", "bot", "service_principal", "no", "*=CAN_QUERY"],
    ]
    assert rows[0].split()[-2:] == ["never", "never"]  # alice: never used, never expires
    *_, last_used, day, minute, utc = rows[1].split()  # bot: never used, expires in 12 h
    expires = datetime.strptime(f"{day} {minute}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert last_used == "never" and utc == "UTC"
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=12))) < timedelta(minutes=2)
    listed = _run("tokens", "list", "--json", "--state-dir", str(state))
    tokens = json.loads(listed.stdout)
    assert [(t["name"], t["admin"], t["grants"], t["kind"]) for t in tokens] == [
        ("alice", True, {}, "user"),
        ("bot", False, {"*": "CAN_QUERY"}, "service_principal"),
    ]
    assert tokens[0]["expires_ms"] is None and tokens[1]["expires_ms"] > tokens[1]["created_ms"]
    for secret in secrets:
        for out in (human.stdout, human.stderr, listed.stdout, listed.stderr):
            assert secret not in out and secret[3:] not in out


def test_revoke(state: Path) -> None:
    secret = _create(state, "alice", "--admin")
    r = _run("tokens", "revoke", "alice", "--state-dir", str(state))
    assert r.returncode == 0 and r.stdout == "" and "revoked" in r.stderr
    db = AuthDB(state / "auth.db")
    try:
        assert TokenStore(db).verify(secret) is None
    finally:
        db.close()
    again = _run("tokens", "revoke", "alice", "--state-dir", str(state))
    assert again.returncode == 1 and "no token named 'alice'" in again.stderr
    assert json.loads(_run("tokens", "list", "--json", "--state-dir", str(state)).stdout) == []
    nothing = _run("tokens", "revoke", "ghost", "--state-dir", str(state / "elsewhere"))
    assert nothing.returncode == 1 and not (state / "elsewhere").exists()


@pytest.mark.parametrize(
    "args, error",
    [
        (["--grant", "fraud_detector"], "invalid --grant"),
        (["--grant", "=CAN_QUERY"], "invalid --grant"),
        (["--grant", "fraud_detector=CAN_OWN"], "unknown permission level"),
        (["--expires-in", "30x"], "invalid duration"),
        (["--expires-in", "-5"], "invalid duration"),
        (["--expires-in", "0"], "invalid duration"),
        (["--principal", " "], "--principal"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(state: Path, args: list[str], error: str) -> None:
    r = _run("tokens", "create", "bad", *args, "--state-dir", str(state))
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("modelport: ") and error in r.stderr
    assert json.loads(_run("tokens", "list", "--json", "--state-dir", str(state)).stdout) == []


def test_a_taken_name_is_refused(state: Path) -> None:
    _create(state, "alice", "--admin")
    r = _run("tokens", "create", "alice", "--state-dir", str(state))
    assert r.returncode == 2 and r.stdout == "" and "exists" in r.stderr


def test_state_dir_from_the_environment(state: Path) -> None:
    r = _run("tokens", "create", "alice", "--admin", env=_env(MODELPORT_STATE_DIR=str(state)))
    assert r.returncode == 0 and r.stdout.startswith("mp_")
    assert (state / "auth.db").exists()
    listed = _run("tokens", "list", "--json", env=_env(MODELPORT_STATE_DIR=str(state)))
    assert [t["name"] for t in json.loads(listed.stdout)] == ["alice"]


def test_token_commands_stay_light(state: Path) -> None:
    r = _guarded("tokens", "create", "alice", "--admin", "--state-dir", str(state))
    assert r.returncode == 0 and r.stdout.startswith("mp_")
    assert r.stderr.splitlines()[-1] == "HEAVY=", r.stderr
    r = _guarded("tokens", "list", "--state-dir", str(state), "--log-format", "json")
    assert r.returncode == 0 and r.stderr.splitlines()[-1] == "HEAVY=", r.stderr


@pytest.mark.parametrize("command", [["serve", "models:/sales_forecast/1"], ["demo"]])
@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_exposed_without_auth_refuses_before_binding(state: Path, command: list[str], host: str) -> None:
    r = _guarded(*command, "--host", host, "--state-dir", str(state), "--log-format", "json")
    assert r.returncode == 2, r.stderr
    assert "BIND ATTEMPTED" not in r.stderr and r.stdout == ""
    assert r.stderr.startswith("modelport: refusing to serve")
    assert "modelport tokens create NAME --admin" in r.stderr and "MODELPORT_AUTH" in r.stderr
    assert "--insecure" in r.stderr
    assert r.stderr.splitlines()[-1] == "HEAVY="  # refused before the server stack was even imported
    assert not state.exists()


def test_tls_flags_are_checked_before_serving(state: Path, tmp_path: Path) -> None:
    r = _guarded("serve", "models:/m/1", "--ssl-certfile", str(tmp_path / "nope.pem"), "--state-dir", str(state))
    assert r.returncode == 2 and "--ssl-certfile" in r.stderr and "BIND ATTEMPTED" not in r.stderr
    r = _guarded("serve", "models:/m/1", "--ssl-keyfile", str(tmp_path / "key.pem"), "--state-dir", str(state))
    assert r.returncode == 2 and "--ssl-keyfile needs --ssl-certfile" in r.stderr


def test_duration_and_grant_parsing() -> None:
    assert [parse_duration(t) for t in ("30d", "12h", "90m", "3600s", "3600", "2w", "1D")] == [
        30 * 86400, 12 * 3600, 90 * 60, 3600, 3600, 14 * 86400, 86400,
    ]  # fmt: skip
    for bad in ("", "d", "1.5h", "10y", "-1", "0s"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(bad)
    assert parse_grants(["a=view", "models:/b=CAN_MANAGE", "*=Can_Query"]) == {
        "a": Level.CAN_VIEW, "models:/b": Level.CAN_MANAGE, "*": Level.CAN_QUERY,
    }  # fmt: skip


# -- TLS: `modelport serve --ssl-certfile/--ssl-keyfile` over real HTTPS ----------------------------------------------


def _write_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelport test CA")])
    usage = {k: False for k in ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")}
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].chmod(0o600)
    return paths


@pytest.fixture
def tls_server(demo_registry: DemoRegistry, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca, cert, key = _write_tls(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            *CLI, "serve", "models:/sales_forecast@champion", "--port", str(port),
            "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
            "--state-dir", str(demo_registry.state_dir), "--log-format", "json",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    stderr = proc.stderr

    def pump() -> None:
        for line in stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        wait_for(lines, f"Uvicorn running on https://127.0.0.1:{port}", 120)
        yield f"https://127.0.0.1:{port}", ca
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


@pytest.mark.integration
def test_serve_over_tls(tls_server: tuple[str, Path]) -> None:
    url, ca = tls_server
    trust = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(base_url=url, verify=trust, timeout=30) as c:
        assert c.get("/ping").status_code == 200
        r = c.post("/model/sales_forecast/1/invocations", json={"data": [[2025, "product_A", 100]]})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0] > 0
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"), httpx.Client(timeout=30) as c:
        c.get(f"{url}/ping")  # the system trust store does not know the test CA: TLS really is on
    with pytest.raises(httpx.HTTPError), httpx.Client(timeout=30) as c:
        c.get(f"{url.replace('https', 'http')}/ping")  # and plain HTTP is not served on that port
