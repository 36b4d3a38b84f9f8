"""In a real browser (Debian's Chromium, driven by Playwright): log in, drill down, filter and page
with htmx under the production CSP, and save screenshots to tests/artifacts/."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine

from domain.access.demo import seed_demo_identities
from domain.settings import DEMO_SOURCE
from tests.services import free_port, service_unavailable
from tests.test_access_end_to_end import NOW
from web.app import create_app
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

pytestmark = pytest.mark.browser
DASH = "\u2013"  # the pager typesets ranges with an en dash
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from domain.database import create_db_engine, upgrade
    from domain.settings import load_settings

    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'site.db'}"
    settings = load_settings({"database": {"url": url}, "site": {"session_secret": "b" * 40}})
    engine: Engine = create_db_engine(settings.database)
    upgrade(engine)
    SourcePoller(SimulatedSource.from_settings(DEMO_SOURCE), engine, settings.scheduler).poll_once(now=NOW, force=True)
    seed_demo_identities(engine)
    port = free_port()
    config = uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "site did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    engine.dispose()


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    executable = shutil.which("chromium")
    if executable is None:
        service_unavailable("Debian's chromium is not installed (scripts/install-test-services)", service="Chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, site):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1366, "height": 900}, base_url=site)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    yield page
    context.close()
    assert problems == [], problems  # e.g. a CSP violation or an htmx error


def log_in(page, user: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/gpus")
    assert "/login" in page.url  # redirected, with the target kept
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/gpus")


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_admin_drills_down_cluster_node_gpu(page) -> None:  # type: ignore[no-untyped-def]
    log_in(page, "admin", "admin-demo")
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("link", name="moc-prod").first.click()
    page.wait_for_url("**/clusters/*")
    assert page.get_by_role("heading", name="moc-prod").is_visible()
    shot(page, "cluster")
    page.get_by_role("link", name="moc-a100-01").first.click()
    page.wait_for_url("**/nodes/*")
    page.locator("table a[href^='/gpus/']").first.click()
    page.wait_for_url("**/gpus/*")
    assert page.get_by_role("heading", name="MIG layout").is_visible()
    assert page.locator("svg.chart").count() >= 1 or page.get_by_text("Not enough history").count() >= 1
    shot(page, "gpu")


def test_filtering_and_paging_swap_the_table_in_place(page) -> None:  # type: ignore[no-untyped-def]
    log_in(page, "admin", "admin-demo")
    page.goto("/gpus?limit=10")
    page.evaluate("window.__not_reloaded = true")
    assert page.get_by_text(f"1{DASH}10 of 40").is_visible()
    page.get_by_role("link", name="Next →").click()
    page.get_by_text(f"11{DASH}20 of 40").wait_for()
    assert "offset=10" in page.url  # the state is in the URL
    page.get_by_label("Model").select_option("NVIDIA H100 80GB HBM3")
    page.get_by_text("of 12").wait_for()
    page.get_by_label("Search").fill("nerc-h100-02")
    page.get_by_text(f"1{DASH}4 of 4").wait_for()
    assert page.evaluate("window.__not_reloaded") is True  # htmx swapped the table; no full reload
    assert "q=nerc-h100-02" in page.url
    shot(page, "gpus-filtered")


def test_researcher_sees_only_their_project(page) -> None:  # type: ignore[no-untyped-def]
    log_in(page, "bob", "bob-demo")
    page.goto("/projects")
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and "vision-lab" in rows.first.inner_text()
    page.get_by_role("link", name="vision-lab").click()
    page.wait_for_url("**/projects/*")
    assert page.get_by_role("heading", name="vision-lab").is_visible()
    shot(page, "project-bob")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")


def test_researcher_opens_a_workload_report_card(page) -> None:  # type: ignore[no-untyped-def]
    log_in(page, "alice", "alice-demo")
    page.goto("/workloads?q=inference-api")
    page.locator("tbody tr", has_text="ml-team-a/inference-api").first.get_by_role("link", name="card").click()
    page.wait_for_url("**/workloads/*/report-card")
    assert page.get_by_role("heading", name="Report card: ml-team-a/inference-api").is_visible()
    assert page.get_by_test_id("grade").inner_text() in ("A", "B", "C", "D", "F")
    note = page.locator("[data-kind='tensor-cores-idle']")
    assert note.is_visible() and "Evidence: SM activity" in note.inner_text()
    assert page.get_by_test_id("right-sizing").get_attribute("data-kind") == "keep"
    assert page.get_by_role("cell", name="DCGM_FI_PROF_SM_ACTIVE").is_visible()
    shot(page, "report-card")
