"""Notices about idle GPUs: the outbox, the decisions behind it, exemptions, policy overrides, the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Text
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime
from domain.statuses import OutboxStatus


class NotificationOutboxBase(SQLModel):
    idempotency_key: str = Field(
        max_length=128, unique=True, description="Same decision, same key: deciding again inserts nothing."
    )
    channel: str = Field(max_length=16, description="email, webhook or alertmanager.")
    kind: str = Field(max_length=16, description="notice, reminder, escalation, alert, resolve or digest.")
    project_id: int | None = Field(default=None, foreign_key="research_project.id", index=True)
    recipients: list[str] = Field(default_factory=list, sa_type=JSON, description="E-mail addresses, if e-mail.")
    subject: str = Field(max_length=512)
    body: str = Field(sa_type=Text, description="Plain text of the message.")
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, description="What the channel is sent.")
    status: str = Field(default=OutboxStatus.PENDING, max_length=16)
    attempts: int = Field(default=0, description="Delivery attempts so far.")
    last_error: str | None = Field(default=None, max_length=1024, description="Why the last attempt failed.")
    created_at: datetime = Field(sa_type=UtcDateTime, description="When it was decided.")
    next_attempt_at: datetime = Field(sa_type=UtcDateTime, description="Not sent before this (backoff).")
    sent_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class NotificationOutbox(NotificationOutboxBase, table=True):
    """A decided message: written before any send, so a crash can delay it but never lose it."""

    __tablename__ = "notification_outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_created", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    lease_owner: str | None = Field(default=None, max_length=128, description="The replica sending it now.")
    lease_until: datetime | None = Field(
        default=None, sa_type=UtcDateTime, description="Another replica may claim it after this."
    )


class NotificationOutboxRead(NotificationOutboxBase):
    id: int
    project: str | None = None


class IdleNotice(SQLModel, table=True):
    """One decided notice about one idle workload; its unique key is what makes deciding idempotent."""

    __tablename__ = "idle_notice"
    __table_args__ = (Index("ix_idle_notice_subject", "subject", "idle_since"),)
    id: int | None = Field(default=None, primary_key=True)
    notice_key: str = Field(max_length=600, unique=True)
    subject: str = Field(max_length=512, description="workload:cluster/namespace/pod.")
    project_id: int | None = Field(default=None, foreign_key="research_project.id", index=True)
    idle_since: datetime = Field(sa_type=UtcDateTime, description="Start of the idle episode noticed.")
    kind: str = Field(max_length=16, description="notice, reminder or escalation.")
    number: int = Field(default=0, description="0 for the first notice, then 1, 2, ... per reminder.")
    decided_at: datetime = Field(sa_type=UtcDateTime)
    outbox_id: int | None = Field(default=None, foreign_key="notification_outbox.id", index=True)


class NotificationExemption(SQLModel, table=True):
    """'Still using it': no reminders for this workload until ``expires_at``."""

    __tablename__ = "notification_exemption"
    __table_args__ = (Index("ix_exemption_subject", "hub", "subject", "expires_at"),)
    id: int | None = Field(default=None, primary_key=True)
    hub: str = Field(max_length=253, description="The workload's hub: cluster names are unique only within one.")
    subject: str = Field(max_length=512)
    project_id: int = Field(foreign_key="research_project.id", index=True)
    reason: str = Field(max_length=1024)
    created_by: str = Field(max_length=253)
    created_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    revoked_by: str | None = Field(default=None, max_length=253)


class NotificationPolicyOverride(SQLModel, table=True):
    """A project's policy set on the admin page; empty fields fall back to the configured policy."""

    __tablename__ = "notification_policy"
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="research_project.id", unique=True)
    enabled: bool | None = None
    idle_threshold_percent: float | None = None
    grace_minutes: float | None = None
    reminder_interval_minutes: float | None = None
    escalate_after_minutes: float | None = None
    quiet_hours: str | None = Field(default=None, max_length=32)
    timezone: str | None = Field(default=None, max_length=64)
    max_exemption_days: float | None = None
    updated_by: str = Field(max_length=253)
    updated_at: datetime = Field(sa_type=UtcDateTime)


class NotificationAudit(SQLModel, table=True):
    """Who did what to notifications: exemptions set or revoked, policies changed."""

    __tablename__ = "notification_audit"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UtcDateTime, index=True)
    actor: str = Field(max_length=253)
    action: str = Field(max_length=64)
    project_id: int | None = Field(default=None, foreign_key="research_project.id", index=True)
    subject: str | None = Field(default=None, max_length=512)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
