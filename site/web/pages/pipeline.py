"""The pipeline page (raw > kept > findings > escalations, stage and safety counters, replay) and placement.

Counters are the cumulative ones the worker stores, so every site replica shows the same figures.
Replay runs the recorded inputs through the settings in force and through changed ones, without
touching live findings; it reads the whole fleet's record, so only admins may run it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, QueryParameter
from litestar.response import Template
from pydantic import BaseModel, Field

from domain.models import utcnow
from domain.pipeline.queries import pipeline_overview, placement, visible_models
from domain.pipeline.records import iter_inputs
from domain.pipeline.replay import ReplayError, replay
from web.identity import ADMIN_ONLY, PROTECTED, Admin, Caller, Db, Visible, site_context
from web.rendering import render

REPLAY_MAX_HOURS = 48

ModelParam = Annotated[
    str | None, QueryParameter(description="GPU model, e.g. a100, h100 or a modelName.", max_length=128)
]
CountParam = Annotated[int, QueryParameter(ge=1, le=64, description="GPUs wanted on one node.")]


class ReplayForm(BaseModel):
    """The replay form: the settings to try (blank: as in force) and how far back to go."""

    hours: float = Field(default=6, gt=0, le=REPLAY_MAX_HOURS)
    straggler_k: str = ""
    straggler_quorum: str = ""
    persistence_polls: str = ""
    dedupe_window_seconds: str = ""
    flap_threshold: str = ""
    thermal_threshold_c: str = ""

    def overrides(self) -> dict[str, str]:
        return {k: v.strip() for k, v in self.model_dump(exclude={"hours"}).items() if str(v).strip()}


class PipelinePages(Controller):
    path = "/pipeline"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="pipeline", sync_to_thread=True)
    def index(self, request: Request[Any, Any, Any], principal: Caller, visible: Visible, db: Db) -> Template:
        settings = site_context(request.app.state).settings
        context = {
            "principal": principal,
            "overview": pipeline_overview(db, visible),
            "settings": settings.pipeline,
            "llm": settings.llm,
            "form": ReplayForm(),
            "report": None,
            "error": None,
        }
        return render(request, "pipeline/index.html", context)

    @post(
        "/replay",
        name="pipeline-replay",
        sync_to_thread=True,
        status_code=200,
        dependencies={"admin": ADMIN_ONLY["admin"]},
    )
    def run_replay(
        self,
        request: Request[Any, Any, Any],
        admin: Admin,
        visible: Visible,
        db: Db,
        data: Annotated[ReplayForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Template:
        settings = site_context(request.app.state).settings
        report, error = None, None
        try:
            since = utcnow() - timedelta(hours=data.hours)
            report = replay(
                iter_inputs(db, since=since),
                settings.pipeline,
                data.overrides(),
                idle_threshold_percent=settings.scheduler.idle_threshold_percent,
                interval_seconds=settings.scheduler.poll_interval_seconds,
            )
        except ReplayError as exc:
            error = str(exc)
        context = {
            "principal": admin,
            "report": report,
            "error": error,
            "form": data,
            "overview": pipeline_overview(db, visible),
            "settings": settings.pipeline,
            "llm": settings.llm,
        }
        return render(request, "pipeline/index.html", context, fragments={"replay": "pipeline/_replay.html"})


class PlacementPages(Controller):
    path = "/placement"
    dependencies = PROTECTED
    include_in_schema = False

    @get("/", name="placement", sync_to_thread=True)
    def index(
        self,
        request: Request[Any, Any, Any],
        principal: Caller,
        visible: Visible,
        db: Db,
        model: ModelParam = None,
        count: CountParam = 1,
    ) -> Template:
        ranked = placement(db, visible, model, count) if model else []
        context = {
            "principal": principal,
            "models": visible_models(db, visible),
            "model": model or "",
            "count": count,
            "ranked": ranked,
        }
        return render(request, "pipeline/placement.html", context, fragments={"table": "pipeline/_placement.html"})
