"""An NGSI-LD view (ETSI GS CIM 009) of clusters, nodes, GPUs, MIG slices and research projects.

Entities are read-only, paged with ``limit``/``offset`` and filtered by ``type``; ``count=true`` adds
the ``NGSILD-Results-Count`` header. Every entity carries an ``@context`` naming the core context and
this product's vocabulary, served at ``/ngsi-ld/v1/context.jsonld``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from domain.inventory import Page, PageRequest
from domain.inventory.queries import NotFound, list_clusters, list_gpus, list_nodes, list_projects, list_slices
from domain.models import ClusterRead, GpuRead, GpuSliceRead, NodeRead, ResearchProjectRead
from web.api.schemas import ERRORS
from web.filters import Paging, filters_of
from web.identity import PROTECTED, Db, Visible

MEDIA_TYPE = "application/ld+json"
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
VOCABULARY = "urn:ai-telemetry:vocabulary:"
MAX_CANDIDATES = 500
TYPES = ("Cluster", "Node", "GPU", "GPUSlice", "ResearchProject")
EntityType = Annotated[str, QueryParameter(pattern=f"^({'|'.join(TYPES)})$", description="Entity type.")]


TERMS = (
    "hub",
    "status",
    "statusReason",
    "lastPoll",
    "hostname",
    "gpuModel",
    "gpuCount",
    "driverVersion",
    "health",
    "uuid",
    "index",
    "model",
    "pciBusId",
    "memoryTotal",
    "memoryUsed",
    "utilization",
    "powerDraw",
    "temperature",
    "lastXid",
    "migMode",
    "migInstanceId",
    "profile",
    "namespace",
    "gpuQuota",
    "allocatedGpus",
    "isPartOf",
    "hostedOn",
    "allocatedTo",
    "otherProjects",
    "visibleGpuCount",
    *TYPES,
)
CONTEXT: list[Any] = [CORE_CONTEXT, {"ait": VOCABULARY, **{term: f"ait:{term}" for term in TERMS}}]


def urn(kind: str, *parts: object) -> str:
    return f"urn:ngsi-ld:{kind}:" + ":".join(str(p) for p in parts)


def _prop(value: Any, unit: str | None = None) -> dict[str, Any] | None:
    if value is None:
        return None
    prop: dict[str, Any] = {"type": "Property", "value": value}
    if unit:
        prop["unitCode"] = unit
    return prop


def _rel(target: str) -> dict[str, Any]:
    return {"type": "Relationship", "object": target}


def _entity(entity_id: str, kind: str, context: list[Any], **attributes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": entity_id, "type": kind}
    body.update({name: value for name, value in attributes.items() if value is not None})
    body["@context"] = context
    return body


def cluster_entity(c: ClusterRead, ctx: list[Any]) -> dict[str, Any]:
    return _entity(
        urn("Cluster", c.hub, c.name),
        "Cluster",
        ctx,
        name=_prop(c.name),
        hub=_prop(c.hub),
        status=_prop(c.status),
        statusReason=_prop(c.status_reason),
        gpuCount=_prop(c.gpu_count),
        visibleGpuCount=_prop(c.visible_gpu_count),
        lastPoll=_prop(c.last_poll_at.isoformat() if c.last_poll_at else None),
    )


def node_entity(n: NodeRead, ctx: list[Any]) -> dict[str, Any]:
    return _entity(
        urn("Node", n.hub, n.cluster, n.hostname),
        "Node",
        ctx,
        hostname=_prop(n.hostname),
        gpuModel=_prop(n.gpu_model),
        gpuCount=_prop(n.gpu_count),
        driverVersion=_prop(n.driver_version),
        health=_prop(n.health),
        isPartOf=_rel(urn("Cluster", n.hub, n.cluster)),
    )


def gpu_entity(g: GpuRead, ctx: list[Any]) -> dict[str, Any]:
    return _entity(
        urn("GPU", g.uuid),
        "GPU",
        ctx,
        uuid=_prop(g.uuid),
        index=_prop(g.index),
        model=_prop(g.model),
        pciBusId=_prop(g.pci_bus_id),
        memoryTotal=_prop(g.memory_total_mib, "M9"),
        memoryUsed=_prop(g.memory_used_mib, "M9"),
        utilization=_prop(g.utilization, "P1"),
        powerDraw=_prop(g.power_watts, "WTT"),
        temperature=_prop(g.temperature_c, "CEL"),
        lastXid=_prop(g.last_xid),
        migMode=_prop(g.mig_mode),
        health=_prop(g.health),
        hostedOn=_rel(urn("Node", g.hub, g.cluster, g.node)),
        allocatedTo=_prop(g.allocated_to or None),
        otherProjects=_prop(g.other_projects or None),
    )


def slice_entity(s: GpuSliceRead, ctx: list[Any]) -> dict[str, Any]:
    return _entity(
        urn("GPUSlice", s.gpu_uuid, s.mig_instance_id),
        "GPUSlice",
        ctx,
        migInstanceId=_prop(s.mig_instance_id),
        profile=_prop(s.profile),
        utilization=_prop(s.utilization, "P1"),
        memoryUsed=_prop(s.memory_used_mib, "M9"),
        memoryTotal=_prop(s.memory_total_mib, "M9"),
        health=_prop(s.health),
        isPartOf=_rel(urn("GPU", s.gpu_uuid)),
        allocatedTo=_prop(s.allocated_to),
        otherProjects=_prop(s.other_projects or None),
    )


def project_entity(p: ResearchProjectRead, ctx: list[Any]) -> dict[str, Any]:
    return _entity(
        urn("ResearchProject", p.hub, p.cluster, p.namespace),
        "ResearchProject",
        ctx,
        namespace=_prop(p.namespace),
        name=_prop(p.display_name),
        gpuQuota=_prop(p.gpu_quota),
        allocatedGpus=_prop(p.allocated_gpus),
        isPartOf=_rel(urn("Cluster", p.hub, p.cluster)),
    )


_LISTS: dict[str, tuple[Callable[..., Page[Any]], Callable[[Any, list[Any]], dict[str, Any]]]] = {
    "Cluster": (list_clusters, cluster_entity),
    "Node": (list_nodes, node_entity),
    "GPU": (list_gpus, gpu_entity),
    "GPUSlice": (list_slices, slice_entity),
    "ResearchProject": (list_projects, project_entity),
}


def _candidates(db: Any, visible: Any, kind: str, key: list[str]) -> list[Any]:
    """The few rows an entity id can name, found through the same scoped queries as the lists."""
    first = PageRequest(limit=MAX_CANDIDATES)
    if kind == "Cluster" and len(key) == 2:
        return list_clusters(db, visible, first, hub=key[0], q=key[1]).items
    if kind == "Node" and len(key) == 3:
        return list_nodes(db, visible, first, q=key[2]).items
    if kind == "GPU" and len(key) == 1:
        return list_gpus(db, visible, first, q=key[0]).items
    if kind == "GPUSlice" and len(key) == 2:
        gpus = list_gpus(db, visible, PageRequest(limit=1), q=key[0]).items
        return list_slices(db, visible, first, gpu_id=gpus[0].id).items if gpus else []
    if kind == "ResearchProject" and len(key) == 3:
        return list_projects(db, visible, first, q=key[2]).items
    return []


def _ld(body: Any, **headers: str) -> Response[Any]:
    return Response(body, media_type=MEDIA_TYPE, headers=headers)


class NgsiLdApi(Controller):
    path = "/ngsi-ld/v1"
    dependencies = PROTECTED
    tags = ["ngsi-ld"]

    @get(
        "/entities",
        dependencies=filters_of(Paging),
        sync_to_thread=True,
        responses=ERRORS,
        media_type=MEDIA_TYPE,
        summary="Query entities of one type (NGSI-LD)",
    )
    def entities(
        self,
        visible: Visible,
        db: Db,
        type: EntityType,
        filters: NamedDependency[Paging],
        count: FromQuery[bool] = False,
    ) -> Response[Any]:
        if type not in _LISTS:
            raise ValueError(f"type: unknown entity type {type!r}; one of {', '.join(TYPES)}")
        query, shape = _LISTS[type]
        page = query(db, visible, filters.page)
        ctx = CONTEXT
        headers = {"NGSILD-Results-Count": str(page.total)} if count else {}
        return _ld([shape(item, ctx) for item in page.items], **headers)

    @get(
        "/entities/{entity_id:str}",
        sync_to_thread=True,
        responses=ERRORS,
        media_type=MEDIA_TYPE,
        summary="One entity by its URN (NGSI-LD)",
    )
    def entity(self, visible: Visible, db: Db, entity_id: FromPath[str]) -> Response[Any]:
        parts = entity_id.split(":")
        if len(parts) < 4 or parts[:2] != ["urn", "ngsi-ld"] or parts[2] not in _LISTS:
            raise NotFound(entity_id)
        _, shape = _LISTS[parts[2]]
        for item in _candidates(db, visible, parts[2], parts[3:]):
            body = shape(item, CONTEXT)
            if body["id"] == entity_id:
                return _ld(body)
        raise NotFound(entity_id)


@get(
    "/ngsi-ld/v1/context.jsonld",
    media_type=MEDIA_TYPE,
    tags=["ngsi-ld"],
    summary="The JSON-LD @context of these entities (public: a vocabulary, no fleet data)",
)
async def ngsi_ld_context() -> Response[Any]:
    return _ld({"@context": CONTEXT})
