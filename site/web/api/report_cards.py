"""``/api/v1/report-cards``: a workload run's report card (by any of its workloads) and a project's for a month."""

from __future__ import annotations

from litestar import Controller, get

from domain.models import utcnow
from domain.report_cards.cards import ReportCard
from domain.report_cards.queries import project_month_card, run_card_of
from web.api.schemas import ERRORS
from web.api.v1 import Month
from web.identity import PROTECTED, Db, Visible
from web.pages.common import EntityId


class ReportCardApi(Controller):
    path = "/api/v1/report-cards"
    dependencies = PROTECTED
    tags = ["report cards"]

    @get("/workloads/{workload_id:int}", sync_to_thread=True, responses=ERRORS, summary="A workload's report card")
    def workload(self, visible: Visible, db: Db, workload_id: EntityId) -> ReportCard:
        """The card of the workload run the workload belongs to: the pod's workloads (one per device) that
        overlap it, with time-weighted activity, memory peak, grade, advice and right-sizing."""
        return run_card_of(db, visible, workload_id)

    @get("/projects/{project_id:int}", sync_to_thread=True, responses=ERRORS, summary="A project's monthly card")
    def project(self, visible: Visible, db: Db, project_id: EntityId, month: Month = None) -> ReportCard:
        """The project's workloads that started in the month (default: this month), summed."""
        return project_month_card(db, visible, project_id, month or utcnow().strftime("%Y-%m"))


REPORT_CARD_CONTROLLERS = [ReportCardApi]
