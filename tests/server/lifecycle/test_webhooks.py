"""WebhookReceiver: MLflow's HMAC signature, replay window, alias events only."""

from __future__ import annotations

import json

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from server.errors import InvalidInput, PermissionDenied, Unauthenticated
from server.lifecycle.webhooks import WebhookReceiver, sign

NOW = 1_800_000_000.0


def _delivery(payload: dict, secret: str = "s3cret", ts: float = NOW) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    stamp = str(int(ts))
    headers = {
        "x-mlflow-delivery-id": "d-1",
        "x-mlflow-timestamp": stamp,
        "x-mlflow-signature": sign(secret, "d-1", stamp, body),
    }
    return headers, body


ALIAS_SET = {
    "entity": "model_version_alias",
    "action": "created",
    "data": {"name": "churn", "alias": "champion", "version": "3"},
}


@pytest.fixture
def seen() -> list[str]:
    return []


@pytest.fixture
def receiver(seen: list[str]) -> WebhookReceiver:
    return WebhookReceiver("s3cret", seen.append, clock=lambda: NOW)


def test_signature_is_mlflows() -> None:
    body = json.dumps(ALIAS_SET)
    assert sign("k", "id", "17", body.encode()) == _generate_hmac_signature("k", "id", "17", body)


def test_alias_events_trigger_a_check(receiver: WebhookReceiver, seen: list[str]) -> None:
    headers, body = _delivery(ALIAS_SET)
    assert receiver.receive(headers, body) == {
        "status": "accepted",
        "event": "model_version_alias.created",
        "model": "churn",
    }
    deleted = {"entity": "model_version_alias", "action": "deleted", "data": {"name": "fraud", "alias": "champion"}}
    receiver.receive(*_delivery(deleted))
    assert seen == ["churn", "fraud"]


def test_other_events_are_ignored(receiver: WebhookReceiver, seen: list[str]) -> None:
    event = {"entity": "model_version", "action": "created", "data": {"name": "churn", "version": "4"}}
    assert receiver.receive(*_delivery(event))["status"] == "ignored"
    assert seen == []


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: ({**h, "x-mlflow-signature": "v1,AAAA"}, b),
        lambda h, b: (h, b.replace(b"champion", b"challenger")),
        lambda h, b: ({k: v for k, v in h.items() if k != "x-mlflow-signature"}, b),
        lambda h, b: ({**h, "x-mlflow-timestamp": "soon"}, b),
    ],
)
def test_bad_signatures_are_refused(receiver: WebhookReceiver, seen: list[str], tamper) -> None:  # type: ignore[no-untyped-def]
    headers, body = tamper(*_delivery(ALIAS_SET))
    with pytest.raises(Unauthenticated):
        receiver.receive(headers, body)
    with pytest.raises(Unauthenticated):
        receiver.receive(*_delivery(ALIAS_SET, secret="wrong"))
    assert seen == []


def test_stale_deliveries_are_refused(receiver: WebhookReceiver) -> None:
    with pytest.raises(Unauthenticated, match="timestamp"):
        receiver.receive(*_delivery(ALIAS_SET, ts=NOW - 301))
    receiver.receive(*_delivery(ALIAS_SET, ts=NOW - 299))


def test_without_a_secret_the_receiver_is_off(seen: list[str]) -> None:
    with pytest.raises(PermissionDenied):
        WebhookReceiver(None, seen.append).receive(*_delivery(ALIAS_SET))


def test_malformed_payloads(receiver: WebhookReceiver) -> None:
    for payload in ([1], {"entity": "model_version_alias", "action": "created", "data": {}}):
        with pytest.raises(InvalidInput):
            receiver.receive(*_delivery(payload))  # type: ignore[arg-type]
