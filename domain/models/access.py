"""Local authorization mode: users, personal access tokens and grants (Keycloak holds these otherwise)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, UniqueConstraint
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime, utcnow


class LocalUser(SQLModel, table=True):
    __tablename__ = "local_user"
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    display_name: str = Field(max_length=128)
    password_hash: str = Field(max_length=256)
    is_admin: bool = False
    email: str | None = Field(default=None, max_length=254, description="Where notices to this user go; validated.")
    disabled: bool = Field(default=False, description="A disabled user can neither log in nor use their tokens.")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ApiToken(SQLModel, table=True):
    """A personal access token; only its SHA-256 is stored."""

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="local_user.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    name: str = Field(default="cli", max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class AccessGrant(SQLModel, table=True):
    """``principal`` (``user:NAME``) may read one research project, or every project of one cluster."""

    __tablename__ = "access_grant"
    __table_args__ = (
        UniqueConstraint("principal", "project_id", "cluster_id", "scope"),
        CheckConstraint("(project_id IS NULL) <> (cluster_id IS NULL)", name="grant_one_target"),
    )
    id: int | None = Field(default=None, primary_key=True)
    principal: str = Field(max_length=253, index=True)
    project_id: int | None = Field(default=None, foreign_key="research_project.id", index=True)
    cluster_id: int | None = Field(default=None, foreign_key="cluster.id", index=True)
    scope: str = Field(default="GET", max_length=16)
    granted_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    granted_by: str | None = Field(default=None, max_length=253)
