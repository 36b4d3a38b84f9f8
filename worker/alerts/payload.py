"""Alertmanager webhook payloads (version 4), parsed strictly and fast.

The fields Alertmanager always sends and the receiver relies on are required (``version``,
``status``, ``alerts``; per alert ``status``, ``labels``, ``startsAt``, ``fingerprint``); the others
are optional but type-checked when present; unknown fields are ignored, so newer Alertmanager
releases (``notification_reason`` and whatever follows) keep working. Timestamps must carry a
zone and are normalised to UTC; Go's zero time (``0001-01-01T00:00:00Z``, the ``endsAt`` of a
firing alert) becomes ``None``.

Every problem raises :class:`InvalidPayload` naming the offending field as a JSON path
(``alerts[3].startsAt``), which the route turns into a 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

Status = Literal["firing", "resolved"]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Fingerprint = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Labels = dict[str, str]

ALERTNAME_LENGTH = 253
ZERO_TIME_YEAR = 1
"""Go's zero ``time.Time`` is 0001-01-01T00:00:00Z; Alertmanager sends it as the endsAt of firing alerts."""


class InvalidPayload(ValueError):
    """The body is not an Alertmanager v4 webhook; ``field`` names what is wrong (None: the body itself)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Alert(msgspec.Struct, kw_only=True):
    status: Status
    labels: Labels
    starts_at: AwareDatetime = msgspec.field(name="startsAt")
    fingerprint: Fingerprint
    annotations: Labels = msgspec.field(default_factory=dict)
    ends_at: AwareDatetime | None = msgspec.field(default=None, name="endsAt")
    generator_url: str = msgspec.field(default="", name="generatorURL")


class Webhook(msgspec.Struct, kw_only=True):
    version: Literal["4"]
    status: Status
    alerts: list[Alert]
    receiver: str = ""
    group_key: str = msgspec.field(default="", name="groupKey")
    truncated_alerts: Annotated[int, msgspec.Meta(ge=0)] = msgspec.field(default=0, name="truncatedAlerts")
    group_labels: Labels = msgspec.field(default_factory=dict, name="groupLabels")
    common_labels: Labels = msgspec.field(default_factory=dict, name="commonLabels")
    common_annotations: Labels = msgspec.field(default_factory=dict, name="commonAnnotations")
    external_url: str = msgspec.field(default="", name="externalURL")
    notification_reason: str | None = None


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alert of a webhook, ready to be stored: the identity of its receipt and what to keep."""

    fingerprint: str
    starts_at: datetime
    status: Status
    ends_at: datetime | None
    labels: Labels
    annotations: Labels
    alertname: str | None
    payload: dict[str, Any]

    @property
    def receipt_key(self) -> tuple[str, datetime, str]:
        """Redelivery is recognised by fingerprint + startsAt + status."""
        return (self.fingerprint, self.starts_at, self.status)


@dataclass(frozen=True, slots=True)
class ParsedWebhook:
    webhook: Webhook
    alerts: list[AlertRecord]


_DECODER = msgspec.json.Decoder(Webhook)
_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


def _field_of(message: str) -> tuple[str, str | None]:
    """msgspec's message without its location, and the location as ``alerts[0].startsAt``."""
    match = _PATH.search(message)
    path = match.group("path").lstrip(".") if match else ""
    text = message[: match.start()] if match else message
    missing = _MISSING.match(text)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
    return text, path or None


def _utc(value: datetime, where: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidPayload("timestamp is out of range once converted to UTC", where) from None


def _check_strings(value: Any, path: str) -> None:
    """Reject NUL characters, which no database text column can hold."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidPayload("NUL characters are not allowed", path or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, path)
            _check_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_strings(item, f"{path}[{index}]")


def _group_context(webhook: Webhook) -> dict[str, Any]:
    return {
        "version": webhook.version,
        "receiver": webhook.receiver,
        "status": webhook.status,
        "groupKey": webhook.group_key,
        "externalURL": webhook.external_url,
    }


def parse_webhook(body: bytes) -> ParsedWebhook:
    """Decode and validate a webhook body; :class:`InvalidPayload` names the offending field."""
    try:
        webhook = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        message, where = _field_of(str(exc))
        raise InvalidPayload(message, where) from None
    except msgspec.DecodeError as exc:
        raise InvalidPayload(f"body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec decodes strings lazily: invalid UTF-8 inside one lands here
        raise InvalidPayload(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise InvalidPayload("body is nested too deeply") from None
    builtins = msgspec.to_builtins(webhook)
    if b"\\u0000" in body:  # in valid JSON a NUL can only arrive escaped
        _check_strings(builtins, "")
    context = _group_context(webhook)
    records: list[AlertRecord] = []
    for index, (alert, raw) in enumerate(zip(webhook.alerts, builtins["alerts"], strict=True)):
        starts_at = _utc(alert.starts_at, f"alerts[{index}].startsAt")
        ends_at = None
        if alert.ends_at is not None and alert.ends_at.year != ZERO_TIME_YEAR:
            ends_at = _utc(alert.ends_at, f"alerts[{index}].endsAt")
        alertname = alert.labels.get("alertname")
        records.append(
            AlertRecord(
                fingerprint=alert.fingerprint,
                starts_at=starts_at,
                status=alert.status,
                ends_at=ends_at,
                labels=alert.labels,
                annotations=alert.annotations,
                alertname=alertname[:ALERTNAME_LENGTH] if alertname else None,
                payload={**context, "alert": raw},
            )
        )
    return ParsedWebhook(webhook, records)
