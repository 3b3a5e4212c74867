"""MLflow registry webhooks: signature check and the alias events that trigger a promotion check.

MLflow (3.3+, SQL backends) POSTs ``{"entity", "action", "timestamp", "data"}`` with the headers
``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp`` (unix seconds) and, when the webhook has a secret,
``X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, "{delivery_id}.{timestamp}.{body}")>``
(``mlflow/webhooks/delivery.py``). Unsigned, badly signed or stale deliveries are refused; a webhook is only a hint
to look at the registry now, so even a replayed one cannot make the server serve anything the registry does not say.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from server.errors import InvalidInput, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_ID_HEADER = "x-mlflow-delivery-id"
ALIAS_ENTITY = "model_version_alias"


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    content = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One delivery: ``entity`` and ``action`` (``model_version_alias`` / ``created``) and its ``data``."""

    entity: str
    action: str
    data: Mapping[str, Any]

    @property
    def is_alias_change(self) -> bool:
        return self.entity == ALIAS_ENTITY and self.action in ("created", "deleted")


class WebhookReceiver:
    """Verifies MLflow webhook deliveries and turns alias events into promotion checks.

    Args:
        secret: the webhook's secret; ``None`` disables the receiver (every delivery gets ``PermissionDenied``).
        on_alias_change: called with the registered model name of an alias event.
        tolerance_s: deliveries whose timestamp is further than this from now are refused (replays).
        clock: wall-clock seconds (tests pin it).
    """

    def __init__(
        self,
        secret: str | None,
        on_alias_change: Callable[[str], None],
        *,
        tolerance_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._on_alias_change = on_alias_change
        self.relays: list[Callable[[str], None]] = []
        """Also called with the model name of each alias event (replicas tell the others: server.scaleout)."""
        self.tolerance_s = tolerance_s
        self._clock = clock

    def receive(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Verify one delivery and act on it; returns the JSON answer.

        Args:
            headers: request headers, keys lower-cased.
            body: the raw request body (the signature covers these exact bytes).

        Raises:
            PermissionDenied: no secret is configured.
            Unauthenticated: signature missing, malformed or wrong, or the timestamp is stale.
            InvalidInput: the body is not an MLflow webhook payload.
        """
        self.verify(headers, body)
        event = parse(body)
        delivery = headers.get(DELIVERY_ID_HEADER, "")
        if not event.is_alias_change:
            kind = f"{event.entity}.{event.action}"
            log.info("webhook ignored", extra={"webhook_event": kind, "delivery_id": delivery})
            return {"status": "ignored", "event": f"{event.entity}.{event.action}"}
        name = event.data.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput("alias event without a registered model name", field="data.name")
        log.info(
            "webhook: alias changed",
            extra={
                "model": name,
                "alias": event.data.get("alias"),
                "version": event.data.get("version"),
                "webhook_event": f"{event.entity}.{event.action}",
                "delivery_id": delivery,
            },
        )
        self._on_alias_change(name)
        for relay in self.relays:
            relay(name)
        return {"status": "accepted", "event": f"{event.entity}.{event.action}", "model": name}

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise unless the delivery carries a valid, fresh signature."""
        if self._secret is None:
            raise PermissionDenied(
                "the webhook receiver is disabled; set promotion.webhook_secret to the MLflow webhook's secret"
            )
        signature = headers.get(SIGNATURE_HEADER)
        delivery_id = headers.get(DELIVERY_ID_HEADER)
        timestamp = headers.get(TIMESTAMP_HEADER)
        if not signature or not delivery_id or not timestamp:
            raise Unauthenticated(
                "missing webhook signature headers (X-MLflow-Signature, X-MLflow-Delivery-Id, X-MLflow-Timestamp)",
                field="X-MLflow-Signature",
            )
        try:
            sent_at = float(timestamp)
        except ValueError:
            raise Unauthenticated("X-MLflow-Timestamp is not a unix timestamp", field="X-MLflow-Timestamp") from None
        if abs(self._clock() - sent_at) > self.tolerance_s:
            raise Unauthenticated(
                f"webhook timestamp is more than {self.tolerance_s:g}s away from now", field="X-MLflow-Timestamp"
            )
        expected = sign(self._secret, delivery_id, timestamp, body)
        if not any(hmac.compare_digest(expected, s.strip()) for s in signature.split(" ")):
            raise Unauthenticated("webhook signature does not match", field="X-MLflow-Signature")


def parse(body: bytes) -> WebhookEvent:
    """Parse an MLflow webhook payload."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"webhook body is not JSON: {exc}", field="body") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise InvalidInput("webhook body must be an object with 'entity', 'action' and 'data'", field="body")
    return WebhookEvent(str(payload.get("entity", "")), str(payload.get("action", "")), payload["data"])
