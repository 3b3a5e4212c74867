"""Safe defaults before serving: the exposure decision, TLS file checks, and how ``preflight`` applies them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from server.ops.authdb import AuthDB
from server.ops.tokens import TokenStore
from server.safety import Exposure, check_exposure, check_tls, preflight
from server.settings import AuthSettings, OAuthSettings, Settings

OAUTH = OAuthSettings(
    issuer="https://idp.example.com", audience="https://models.example.com/mcp", jwks_url="https://idp.example.com/jwks"
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MODELPORT_"):
            monkeypatch.delenv(key)


def settings(**values: Any) -> Settings:
    return Settings(**values)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_serves_quietly(host: str) -> None:
    assert check_exposure(settings(host=host), tokens_exist=False) == Exposure(True)
    assert check_exposure(settings(host=host, insecure=True), tokens_exist=False) == Exposure(True)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "models.example.com"])
def test_exposed_without_credentials_is_refused_with_the_fixes(host: str) -> None:
    ok, message, level = check_exposure(settings(host=host, port=9000, state_dir=Path("/srv/mp")), tokens_exist=False)
    assert not ok and level == logging.ERROR and message is not None
    first = message.splitlines()[0]
    assert first.startswith("modelport: refusing to serve") and ":9000" in first
    assert "modelport tokens create NAME --admin --state-dir /srv/mp" in message
    assert "MODELPORT_AUTH" in message and "oauth" in message
    assert "--insecure" in message and "--host 127.0.0.1" in message


def test_ipv6_address_is_bracketed() -> None:
    _, message, _ = check_exposure(settings(host="::", port=8000), tokens_exist=False)
    assert message is not None and "[::]:8000" in message


@pytest.mark.parametrize("tokens_exist, oauth", [(True, None), (False, OAUTH), (True, OAUTH)])
def test_exposed_with_credentials_serves_quietly(tokens_exist: bool, oauth: OAuthSettings | None) -> None:
    s = settings(host="0.0.0.0", auth=AuthSettings(oauth=oauth))
    assert s.auth_enabled
    assert check_exposure(s, tokens_exist=tokens_exist) == Exposure(True)


@pytest.mark.parametrize("tokens_exist", [False, True])
def test_insecure_exposed_serves_with_a_warning(tokens_exist: bool) -> None:
    s = settings(host="0.0.0.0", insecure=True)
    assert not s.auth_enabled
    ok, message, level = check_exposure(s, tokens_exist=tokens_exist)
    assert ok and level == logging.WARNING and message is not None
    assert "--insecure" in message and "anyone" in message and "0.0.0.0:8000" in message


def test_required_auth_without_credentials_warns_of_401() -> None:
    s = settings(auth=AuthSettings(required=True))
    ok, message, level = check_exposure(s, tokens_exist=False)
    assert ok and level == logging.WARNING and message is not None
    assert "401" in message and "modelport tokens create NAME --admin" in message
    assert check_exposure(s, tokens_exist=True) == Exposure(True)
    assert check_exposure(settings(auth=AuthSettings(required=True, oauth=OAUTH)), tokens_exist=False) == Exposure(True)
    # --insecure cannot switch off auth that is required: then it is the 401 warning, not the "open" one
    ok, message, _ = check_exposure(settings(host="0.0.0.0", insecure=True, auth=AuthSettings(required=True)), False)
    assert ok and message is not None and "401" in message


def test_tls_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    assert check_tls(settings()) is None
    assert check_tls(settings(ssl_certfile=cert)) == f"modelport: --ssl-certfile {cert}: no such file"
    cert.write_text("x")
    assert check_tls(settings(ssl_certfile=cert)) is None  # a PEM holding both the key and the certificate
    assert check_tls(settings(ssl_certfile=cert, ssl_keyfile=key)) == f"modelport: --ssl-keyfile {key}: no such file"
    key.write_text("x")
    assert check_tls(settings(ssl_certfile=cert, ssl_keyfile=key)) is None
    assert check_tls(settings(ssl_keyfile=key)) == "modelport: --ssl-keyfile needs --ssl-certfile"
    assert check_tls(settings(ssl_certfile=tmp_path)) is not None  # a directory is not a certificate


def test_preflight_refuses_without_creating_auth_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert preflight(settings(host="0.0.0.0", state_dir=state)) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelport: refusing to serve 0.0.0.0:8000") and "tokens create" in err
    assert not state.exists()


def test_preflight_serves_once_a_token_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = AuthDB(tmp_path / "auth.db")
    TokenStore(db).create("admin", admin=True)
    db.close()
    assert preflight(settings(host="0.0.0.0", state_dir=tmp_path)) is None
    assert capsys.readouterr() == ("", "")


def test_preflight_logs_the_insecure_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="modelport.security"):
        assert preflight(settings(host="0.0.0.0", insecure=True, state_dir=tmp_path)) is None
    [record] = [r for r in caplog.records if r.name == "modelport.security"]
    assert record.levelno == logging.WARNING and "anyone" in record.getMessage()
    assert capsys.readouterr().out == ""


def test_preflight_logs_the_401_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="modelport.security"):
        assert preflight(settings(state_dir=tmp_path, auth=AuthSettings(required=True))) is None
    assert [r.levelno for r in caplog.records if r.name == "modelport.security"] == [logging.WARNING]
    assert "401" in caplog.text


def test_preflight_refuses_missing_tls_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert preflight(settings(ssl_certfile=tmp_path / "missing.pem", state_dir=tmp_path)) == 2
    assert "--ssl-certfile" in capsys.readouterr().err
