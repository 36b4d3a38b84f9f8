"""Delivery channels: SMTP e-mail, a Slack/Mattermost-compatible webhook, Alertmanager's v2 API.

Each channel sends one outbox row and raises :class:`DeliveryError` with a sentence for the
operator when it cannot; the sender job turns that into a retry with backoff. Sends carry the
row's idempotency key where the other side can use it: the e-mail's ``Message-ID`` (a mail system
or reader can drop a duplicate), the webhook's ``Idempotency-Key`` header, and for Alertmanager the
alert's labels themselves (posting the same alert twice updates it, never doubles it). The one
edge left is e-mail: if the worker dies after the SMTP server accepted a message but before the
outbox recorded it sent, the message goes out again after the lease expires (at-least-once).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol

import httpx

from domain.models import NotificationOutbox
from domain.settings import NotificationSettings


class DeliveryError(Exception):
    """A channel could not deliver; the message says why (kept as the outbox row's last error)."""


class Channel(Protocol):
    name: str

    def send(self, row: NotificationOutbox) -> None: ...


def message_id(key: str, sender: str) -> str:
    domain = sender.rpartition("@")[2] or "ai-telemetry.local"
    safe = "".join(c if c.isalnum() or c in ".-_" else "." for c in key)[:120]
    return f"<{safe}@{domain}>"


class SmtpChannel:
    name = "email"

    def __init__(self, settings: NotificationSettings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        if not settings.smtp_host:
            raise ValueError("smtp_host is not set")
        self.settings = settings
        self.ssl_context = ssl_context or ssl.create_default_context()

    def build(self, row: NotificationOutbox) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.smtp_from
        message["To"] = ", ".join(row.recipients)
        message["Subject"] = row.subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = message_id(row.idempotency_key, self.settings.smtp_from)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(row.body)
        return message

    def send(self, row: NotificationOutbox) -> None:
        if not row.recipients:
            raise DeliveryError("no recipients")
        s = self.settings
        try:
            with smtplib.SMTP(s.smtp_host or "", s.smtp_port, timeout=s.smtp_timeout_seconds) as smtp:
                if s.smtp_starttls:
                    smtp.starttls(context=self.ssl_context)
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_secret() or "")
                refused = smtp.send_message(self.build(row))
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"SMTP server refused every recipient: {_codes(exc.recipients)}") from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP server answered {exc.smtp_code}: {_text(exc.smtp_error)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {s.smtp_host}:{s.smtp_port}: {type(exc).__name__}: {exc}") from None
        if refused:
            # Accepted for some recipients: sending again would repeat it to those, so it counts as sent.
            return


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _codes(recipients: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{who} ({code} {_text(text)})" for who, (code, text) in recipients.items())


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, *, transport: httpx.BaseTransport | None = None, timeout: float = 15) -> None:
        self.url = url
        self.client = httpx.Client(transport=transport, timeout=timeout)

    def send(self, row: NotificationOutbox) -> None:
        _post(self.client, self.url, row.payload, {"Idempotency-Key": row.idempotency_key}, "webhook")


class AlertmanagerChannel:
    name = "alertmanager"

    def __init__(self, base_url: str, *, transport: httpx.BaseTransport | None = None, timeout: float = 15) -> None:
        self.url = f"{base_url.rstrip('/')}/api/v2/alerts"
        self.client = httpx.Client(transport=transport, timeout=timeout)

    def send(self, row: NotificationOutbox) -> None:
        _post(self.client, self.url, row.payload.get("alerts", []), {}, "Alertmanager")


def _post(client: httpx.Client, url: str, body: object, headers: dict[str, str], what: str) -> None:
    try:
        response = client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{what} {url}: {type(exc).__name__}: {exc}") from None
    if response.status_code >= 300:
        raise DeliveryError(f"{what} {url} answered {response.status_code}: {response.text[:200]}")


def channels_from(settings: NotificationSettings) -> dict[str, Channel]:
    """The channels the settings turn on, by the outbox's channel name."""
    out: dict[str, Channel] = {}
    if settings.smtp_host:
        out["email"] = SmtpChannel(settings)
    if settings.webhook_url:
        out["webhook"] = WebhookChannel(settings.webhook_url)
    if settings.alertmanager_url:
        out["alertmanager"] = AlertmanagerChannel(settings.alertmanager_url)
    return out
