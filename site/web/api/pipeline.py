"""JSON API of the signal pipeline: findings, idle waste, the pipeline's counters, placement."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from pydantic import BaseModel, Field

from domain.models import FindingRead
from domain.pipeline.queries import get_finding, pipeline_overview, placement, waste_by_project
from web.api.schemas import ERRORS, Paged
from web.filters import FindingFilter, filters_of
from web.identity import PROTECTED, Db, Visible
from web.pages.common import EntityId


class StageRead(BaseModel):
    name: str
    description: str
    dropped: int


class PipelineRead(BaseModel):
    """Cumulative figures of the signal pipeline, as stored by the worker.

    Every counter is of the whole fleet's pipeline (throughput, no project named); ``open_findings`` is
    counted in the caller's scope, as the findings list would show it.
    """

    raw: int = Field(description="Signals in (polls and alerts), the whole fleet's pipeline.")
    kept: int = Field(description="Signals through every filter.")
    findings: int = Field(description="Findings opened.")
    escalations: int = Field(description="Escalations (findings opened or worsened at the escalation severity).")
    compression: float | None = Field(description="raw / escalations, cumulative; null before the first escalation.")
    open_findings: int = Field(description="Open and acknowledged findings the caller may see (their scope).")
    stages: list[StageRead]
    safety: dict[str, int] = Field(description="critical_suppressed must be 0.")
    correlation: dict[str, int]
    straggler: dict[str, int]
    llm: dict[str, int]
    counters: dict[str, int] = Field(description="Every counter by name.")


class WasteRead(BaseModel):
    project_id: int
    namespace: str
    cluster: str
    idle_gpu_hours: float
    findings: int


class PlacementRead(BaseModel):
    node_id: int
    hostname: str
    cluster_id: int
    cluster: str
    model: str
    fits: bool
    score: float
    health: float = Field(description="0..1: healthy GPUs, halved by open warnings, 0 with a critical finding.")
    contention: float = Field(description="0..1: share of GPUs in use, weighted by how busy they are.")
    gpus_free: int
    gpus_total: int
    reasons: list[str]


class FindingApi(Controller):
    path = "/api/v1/findings"
    dependencies = PROTECTED
    tags = ["findings"]

    @get(
        "/",
        dependencies=filters_of(FindingFilter),
        sync_to_thread=True,
        responses=ERRORS,
        summary="List findings (default: open and acknowledged)",
    )
    def index(self, visible: Visible, db: Db, filters: NamedDependency[FindingFilter]) -> Paged[FindingRead]:
        return Paged.of(filters.fetch(db, visible))

    @get(
        "/{finding_id:int}",
        sync_to_thread=True,
        responses=ERRORS,
        summary="One finding, with its evidence and analysis",
    )
    def detail(self, visible: Visible, db: Db, finding_id: EntityId) -> FindingRead:
        return get_finding(db, visible, finding_id)

    @get("/waste", sync_to_thread=True, responses=ERRORS, summary="Idle-while-allocated GPU-hours per research project")
    def waste(self, visible: Visible, db: Db) -> list[WasteRead]:
        return [WasteRead(**w.__dict__) for w in waste_by_project(db, visible)]


class PipelineApi(Controller):
    path = "/api/v1/pipeline"
    dependencies = PROTECTED
    tags = ["pipeline"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="The pipeline's cumulative counters and compression")
    def index(self, visible: Visible, db: Db) -> PipelineRead:
        """The counters are the whole fleet's pipeline and name no project; ``open_findings`` is the caller's."""
        o = pipeline_overview(db, visible)
        return PipelineRead(
            raw=o.raw,
            kept=o.counters.get("kept", 0),
            findings=o.counters.get("findings", 0),
            escalations=o.escalations,
            compression=o.compression,
            open_findings=o.open_findings,
            stages=[StageRead(**s.__dict__) for s in o.stages],
            safety=o.safety,
            correlation=o.correlation,
            straggler=o.straggler,
            llm=o.llm,
            counters=o.counters,
        )


class PlacementApi(Controller):
    path = "/api/v1/placement"
    dependencies = PROTECTED
    tags = ["placement"]

    @get("/", sync_to_thread=True, responses=ERRORS, summary="Nodes ranked for COUNT whole GPUs of MODEL")
    def index(
        self,
        visible: Visible,
        db: Db,
        model: Annotated[
            str,
            QueryParameter(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._()-]*$", max_length=128, description="e.g. a100, h100"),
        ],
        count: Annotated[int, QueryParameter(ge=1, le=64, description="GPUs wanted on one node.")] = 1,
    ) -> list[PlacementRead]:
        return [
            PlacementRead(
                node_id=p.node.node_id,
                hostname=p.node.hostname,
                cluster_id=p.node.cluster_id,
                cluster=p.node.cluster,
                model=p.node.model,
                fits=p.fits,
                score=p.score,
                health=p.health,
                contention=p.contention,
                gpus_free=p.node.gpus_free,
                gpus_total=p.node.gpus_total,
                reasons=list(p.reasons),
            )
            for p in placement(db, visible, model, count)
        ]


PIPELINE_API_CONTROLLERS = [FindingApi, PipelineApi, PlacementApi]
