"""Every table, one module each; import models from here."""

from domain.models.access import AccessGrant, ApiToken, LocalUser
from domain.models.alert_receipt import AlertReceipt
from domain.models.allocation import Allocation, AllocationRead
from domain.models.base import UtcDateTime, utcnow
from domain.models.cluster import Cluster, ClusterRead
from domain.models.finding import Finding, FindingRead
from domain.models.gpu import Gpu, GpuRead
from domain.models.gpu_slice import GpuSlice, GpuSliceRead
from domain.models.history import AccountedPeriod, ClusterRollup, UsageRollupDaily, UsageRollupHourly
from domain.models.hub import Hub, HubRead
from domain.models.ledger import AccountedWindow
from domain.models.login_session import LoginSession
from domain.models.node import Node, NodeRead
from domain.models.notification import (
    IdleNotice,
    NotificationAudit,
    NotificationExemption,
    NotificationOutbox,
    NotificationOutboxRead,
    NotificationPolicyOverride,
)
from domain.models.pipeline import PipelineCounter, PipelineInput
from domain.models.project import ResearchProject, ResearchProjectRead
from domain.models.usage_rollup import UsageRollup, UsageRollupRead
from domain.models.workload import Workload, WorkloadRead

__all__ = [
    "AccessGrant",
    "AccountedPeriod",
    "AccountedWindow",
    "AlertReceipt",
    "Allocation",
    "AllocationRead",
    "ApiToken",
    "Cluster",
    "ClusterRead",
    "ClusterRollup",
    "Finding",
    "FindingRead",
    "Gpu",
    "GpuRead",
    "GpuSlice",
    "GpuSliceRead",
    "Hub",
    "HubRead",
    "IdleNotice",
    "LocalUser",
    "LoginSession",
    "Node",
    "NodeRead",
    "NotificationAudit",
    "NotificationExemption",
    "NotificationOutbox",
    "NotificationOutboxRead",
    "NotificationPolicyOverride",
    "PipelineCounter",
    "PipelineInput",
    "ResearchProject",
    "ResearchProjectRead",
    "UsageRollup",
    "UsageRollupDaily",
    "UsageRollupHourly",
    "UsageRollupRead",
    "UtcDateTime",
    "Workload",
    "WorkloadRead",
    "utcnow",
]
