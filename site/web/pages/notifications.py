"""Notifications: the outbox (sent, pending, failed with reasons), exemptions, policies, and "still using it".

Researchers see their projects' messages, exemptions and policies; admins see all and set policies.
The "still using it" link in each message leads to a form that needs a login and read access to the
workload's project (an unknown or foreign workload is a 404, the same answer for both); the form
posts with the site's CSRF token. Every exemption and policy change is audited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, QueryParameter
from litestar.response import Redirect, Template
from pydantic import BaseModel, Field, field_validator

from domain.models import utcnow
from domain.notifications import queries
from web.filters import OutboxFilter, filters_of
from web.identity import ADMIN_ONLY, PROTECTED, Admin, Caller, Db, Visible, site_context
from web.pages.common import EntityId
from web.rendering import render

Pod = Annotated[str, QueryParameter(description="The pod's name.", min_length=1, max_length=253)]


class RevokeForm(BaseModel):
    pod: str = Field(min_length=1, max_length=253)


class ExemptionForm(BaseModel):
    pod: str = Field(min_length=1, max_length=253)
    reason: str = Field(min_length=1, max_length=1024)
    days: float = Field(gt=0, le=366, description="How long; capped by the project's policy.")


class PolicyForm(BaseModel):
    """A project's override as the form shows it, pre-filled with the current values. A field left out of
    the post is unchanged; a field posted empty inherits (the form shows it empty when it already did)."""

    enabled: str | None = Field(default=None, pattern="^(on|off)$")
    idle_threshold_percent: float | None = Field(default=None, ge=0, le=100)
    grace_minutes: float | None = Field(default=None, ge=0, le=60 * 24 * 60)
    reminder_interval_minutes: float | None = Field(default=None, gt=0, le=60 * 24 * 60)
    escalate_after_minutes: float | None = Field(default=None, ge=0, le=60 * 24 * 60)
    quiet_hours: str | None = Field(default=None, max_length=32, description='e.g. "22:00-07:00"')
    timezone: str | None = Field(default=None, max_length=64, description="IANA time zone, e.g. Europe/Berlin")
    max_exemption_days: float | None = Field(default=None, gt=0, le=366)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_inherits(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def changes(self) -> dict[str, Any]:
        """The posted fields only, as the override stores them."""
        out = {name: getattr(self, name) for name in self.model_fields_set}
        if "enabled" in out:
            out["enabled"] = {"on": True, "off": False}.get(out["enabled"] or "")
        for name in ("quiet_hours", "timezone"):
            if out.get(name) is not None:
                out[name] = out[name].strip()
        return out


def _policies(request: Request[Any, Any, Any]) -> Any:
    return site_context(request.app.state).settings.policies


class NotificationPages(Controller):
    path = "/notifications"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="notifications", sync_to_thread=True, dependencies=filters_of(OutboxFilter))
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        filters: NamedDependency[OutboxFilter],
    ) -> Template:
        context = {
            "principal": principal,
            "page": filters.fetch(db, visible),
            "status": filters.status or "all",
            "statuses": queries.OUTBOX_STATUSES,
            "counts": queries.outbox_counts(db, visible),
        }
        return render(request, "notifications/index.html", context, fragments={"table": "notifications/_table.html"})

    @get("/exemptions", name="notification-exemptions", sync_to_thread=True)
    def exemptions(self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db) -> Template:
        now = utcnow()
        context = {
            "principal": principal,
            "rows": queries.list_exemptions(db, visible),
            "audit": queries.list_audit(db, visible),
            "now": now,
        }
        return render(request, "notifications/exemptions.html", context)

    @get("/projects/{project_id:int}/exempt", name="notification-exempt-form", sync_to_thread=True)
    def exempt_form(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        project_id: EntityId,
        pod: Pod,
    ) -> Template:
        workload = queries.workload_of(db, visible, project_id, pod)
        policy = queries.policy_for(db, _policies(request), project_id)
        context = {
            "principal": principal,
            "workload": workload,
            "max_days": policy.max_exemption / timedelta(days=1),
        }
        return render(request, "notifications/exempt.html", context)

    @post("/projects/{project_id:int}/exempt", name="notification-exempt", sync_to_thread=True)
    def exempt(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        project_id: EntityId,
        data: Annotated[ExemptionForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Redirect:
        queries.exempt(
            db,
            visible,
            principal,
            project_id,
            data.pod,
            data.reason,
            timedelta(days=data.days),
            _policies(request),
            utcnow(),
        )
        db.commit()
        return Redirect("/notifications/exemptions", status_code=303)

    @post("/projects/{project_id:int}/revoke", name="notification-exemption-revoke", sync_to_thread=True)
    def revoke(
        self,
        principal: Caller,
        visible: Visible,
        db: Db,
        project_id: EntityId,
        data: Annotated[RevokeForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Redirect:
        queries.revoke_exemptions(db, visible, principal, project_id, data.pod, utcnow())
        db.commit()
        return Redirect("/notifications/exemptions", status_code=303)

    @get("/policies", name="notification-policies", sync_to_thread=True)
    def policies(self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db) -> Template:
        default, rows = queries.list_policies(db, visible, _policies(request))
        return render(
            request, "notifications/policies.html", {"principal": principal, "default": default, "rows": rows}
        )


class NotificationAdminPages(Controller):
    path = "/notifications/policies"
    dependencies = ADMIN_ONLY
    include_in_schema = False

    @post("/{project_id:int}", name="notification-policy-set", sync_to_thread=True)
    def set_policy(
        self,
        admin: Admin,
        db: Db,
        project_id: EntityId,
        data: Annotated[PolicyForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Redirect:
        queries.set_override(db, admin, project_id, data.changes(), utcnow())
        db.commit()
        return Redirect("/notifications/policies", status_code=303)


NOTIFICATION_CONTROLLERS = [NotificationPages, NotificationAdminPages]
