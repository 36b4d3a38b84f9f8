"""notifications: outbox, decided notices, exemptions, policy overrides, audit

Revision ID: 0010_notifications
Revises: 0009_ledger
Create Date: 2026-12-06 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from domain.models.base import UtcDateTime

revision: str = "0010_notifications"
down_revision: str | None = "0009_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_outbox",
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=1024), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["research_project.id"], name=op.f("fk_notification_outbox_project_id_research_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_notification_outbox_idempotency_key")),
    )
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_created", ["created_at"], unique=False)
        batch_op.create_index("ix_outbox_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_notification_outbox_project_id"), ["project_id"], unique=False)

    op.create_table(
        "idle_notice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notice_key", sa.String(length=600), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("idle_since", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("decided_at", UtcDateTime(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["notification_outbox.id"], name=op.f("fk_idle_notice_outbox_id_notification_outbox")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["research_project.id"], name=op.f("fk_idle_notice_project_id_research_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idle_notice")),
        sa.UniqueConstraint("notice_key", name=op.f("uq_idle_notice_notice_key")),
    )
    with op.batch_alter_table("idle_notice", schema=None) as batch_op:
        batch_op.create_index("ix_idle_notice_subject", ["subject", "idle_since"], unique=False)
        batch_op.create_index(batch_op.f("ix_idle_notice_outbox_id"), ["outbox_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_idle_notice_project_id"), ["project_id"], unique=False)

    op.create_table(
        "notification_exemption",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hub", sa.String(length=253), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=False),
        sa.Column("created_by", sa.String(length=253), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(length=253), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["research_project.id"], name=op.f("fk_notification_exemption_project_id_research_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_exemption")),
    )
    with op.batch_alter_table("notification_exemption", schema=None) as batch_op:
        batch_op.create_index("ix_exemption_subject", ["hub", "subject", "expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_notification_exemption_project_id"), ["project_id"], unique=False)

    op.create_table(
        "notification_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=True),
        sa.Column("idle_threshold_percent", sa.Float(), nullable=True),
        sa.Column("grace_minutes", sa.Float(), nullable=True),
        sa.Column("reminder_interval_minutes", sa.Float(), nullable=True),
        sa.Column("escalate_after_minutes", sa.Float(), nullable=True),
        sa.Column("quiet_hours", sa.String(length=32), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("max_exemption_days", sa.Float(), nullable=True),
        sa.Column("updated_by", sa.String(length=253), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["research_project.id"], name=op.f("fk_notification_policy_project_id_research_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_policy")),
        sa.UniqueConstraint("project_id", name=op.f("uq_notification_policy_project_id")),
    )

    op.create_table(
        "notification_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=253), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.String(length=512), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["research_project.id"], name=op.f("fk_notification_audit_project_id_research_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_audit")),
    )
    with op.batch_alter_table("notification_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notification_audit_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_notification_audit_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    op.drop_table("notification_audit")
    op.drop_table("notification_policy")
    op.drop_table("notification_exemption")
    op.drop_table("idle_notice")
    op.drop_table("notification_outbox")
