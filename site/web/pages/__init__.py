"""Server-rendered pages, one module per noun; each handler also serves its htmx fragments."""

from web.pages.clusters import ClusterPages
from web.pages.findings import FindingPages
from web.pages.fleet import FleetPages
from web.pages.gpus import GpuPages
from web.pages.nodes import NodePages
from web.pages.notifications import NOTIFICATION_CONTROLLERS
from web.pages.pipeline import PipelinePages, PlacementPages
from web.pages.projects import ProjectPages
from web.pages.reports import ReportPages
from web.pages.slices import SlicePages
from web.pages.workloads import WorkloadPages

PAGE_CONTROLLERS = [FleetPages, ClusterPages, NodePages, GpuPages, SlicePages, ProjectPages, ReportPages]
PAGE_CONTROLLERS += [FindingPages, PipelinePages, PlacementPages]
PAGE_CONTROLLERS += [WorkloadPages, *NOTIFICATION_CONTROLLERS]
