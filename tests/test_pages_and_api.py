"""Pages, fragments, reports, usage and the NGSI-LD view: content and permissions."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from tests.test_access_end_to_end import NOW, api_all, demo, identity, login  # noqa: F401  (demo is a fixture)

MONTH = NOW.strftime("%Y-%m")


@pytest.fixture
def admin(demo):  # noqa: F811
    client, truth, _ = demo
    login(client, "admin", identity("admin").password)
    return client, truth


@pytest.mark.parametrize("path", ["/clusters/{c}", "/nodes/{n}", "/gpus/{g}", "/projects/{p}"])
def test_detail_pages_render_history_charts_for_every_range(admin, path: str) -> None:
    client, _ = admin
    ids = {
        "c": api_all(client, "/api/v1/clusters")[0]["id"],
        "n": api_all(client, "/api/v1/nodes")[0]["id"],
        "g": api_all(client, "/api/v1/gpus")[0]["id"],
        "p": api_all(client, "/api/v1/projects")[0]["id"],
    }
    for hours, label in ((1, "1 h"), (24, "24 h"), (720, "30 d")):
        page = client.get(path.format(**ids) + f"?hours={hours}")
        assert page.status_code == 200
        assert f'aria-current="true">{label}</a>' in page.text
    assert client.get(path.format(**ids) + "?hours=0").status_code == 400


def test_overview_has_tiles_chart_top_projects_and_sources(admin) -> None:
    client, truth = admin
    page = client.get("/").text
    for heading in (
        "idle while allocated",
        "Open findings",
        "Allocation and use",
        "Top projects by GPU-hours",
        "Sources",
    ):
        assert heading in page
    tiles = client.get("/", headers={"HX-Request": "true", "HX-Target": "tiles"})
    assert tiles.status_code == 200 and tiles.text.lstrip().startswith('<ul class="tiles">')
    assert f'<span class="value">{len(truth.all_gpus)}</span><span class="name">GPUs' in tiles.text


def test_tables_sort_filter_and_page_as_fragments(admin) -> None:
    client, truth = admin
    first = client.get("/gpus?limit=5&sort=-temperature", headers={"HX-Request": "true", "HX-Target": "table"})
    assert first.status_code == 200 and "<html" not in first.text
    assert f"1\u20135 of {len(truth.all_gpus)}" in first.text  # an en dash, as typeset
    assert 'rel="next"' in first.text and "offset=5" in first.text
    temps = [g["temperature_c"] for g in client.get("/api/v1/gpus?limit=500&sort=-temperature").json()["items"]]
    assert temps == sorted(temps, reverse=True)
    h100 = client.get("/api/v1/gpus", params={"model": "NVIDIA H100 80GB HBM3", "limit": 500}).json()
    assert h100["total"] == 12 and {g["model"] for g in h100["items"]} == {"NVIDIA H100 80GB HBM3"}
    assert client.get("/gpus?sort=_tiebreak").status_code == 400  # internal keys are not sort keys
    bad = client.get("/api/v1/gpus?sort=nonsense")
    assert bad.status_code == 400 and "sort" in bad.json()["detail"]


def test_usage_api_is_scoped_and_validated(demo) -> None:  # noqa: F811
    client, _, _ = demo
    since = (NOW - timedelta(hours=1)).isoformat()
    login(client, "admin", identity("admin").password)
    everything = client.get("/api/v1/usage", params={"since": since}).json()
    # the one poll's window, the 30 s before 09:00:07, crosses into the 09:00 bucket: two partial buckets
    assert len(everything) == 2 and all(point["gpus_allocated"] > 0 for point in everything)
    assert all(p["partial"] and 0 < p["covered_seconds"] < 300 for p in everything)
    assert sum(p["covered_seconds"] for p in everything) == pytest.approx(30)
    login(client, "alice", identity("alice").password)
    mine = client.get("/api/v1/usage", params={"since": since}).json()
    assert 0 < mine[0]["gpus_allocated"] < everything[0]["gpus_allocated"]
    for gpu in api_all(client, "/api/v1/gpus"):  # her GPUs, shared MIG GPUs among them: no reading is a 0
        for point in client.get("/api/v1/usage", params={"since": since, "gpu": gpu["id"]}).json():
            assert point["temperature_max_c"] != 0 and point["power_watts"] != 0 and point["util_avg"] != 0
    assert client.get("/api/v1/usage", params={"since": "2026-11-01T00:00:00"}).status_code == 400
    assert client.get("/api/v1/usage", params={"since": since, "until": since}).json() == []  # an empty range
    assert client.get("/api/v1/usage", params={"since": "yesterday"}).status_code == 400


def test_monthly_statement_page_csv_and_json_show_only_visible_projects(demo) -> None:  # noqa: F811
    client, truth, _ = demo
    login(client, "admin", identity("admin").password)
    rows = list(csv.DictReader(io.StringIO(client.get(f"/reports/monthly.csv?month={MONTH}").text)))
    lines = [r for r in rows if r["row"] == "line"]
    with_usage = {r["project"] for r in lines}
    assert with_usage and with_usage <= {ns for _, ns in truth.projects}
    assert all(float(r["gpu_hours"]) > 0 for r in lines)
    total = next(r for r in rows if r["row"] == "total")
    assert float(total["gpu_hours"]) == pytest.approx(sum(float(r["gpu_hours"]) for r in lines), abs=1e-3)
    assert [r["hub"] for r in rows if r["row"] == "reconciliation"][-1] == "fleet"
    login(client, "bob", identity("bob").password)
    response = client.get(f"/reports/monthly.csv?month={MONTH}")
    assert response.headers["content-type"].startswith("text/csv")
    assert f"ai-telemetry-{MONTH}.csv" in response.headers["content-disposition"]
    bobs = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["project"] for r in bobs if r["row"] in ("line", "project")} == {"vision-lab"}
    statement = client.get(f"/reports/monthly.json?month={MONTH}").json()
    assert [p["namespace"] for p in statement["projects"]] == ["vision-lab"]
    assert statement["reconciliation"]["fleet"]["line"].startswith("Reconciliation (fleet")
    assert client.get("/api/v1/statements", params={"month": MONTH}).json()["projects"] == statement["projects"]
    page = client.get(f"/reports/monthly?month={MONTH}")
    assert "vision-lab" in page.text and "ml-team-a" not in page.text and "Reconciliation" in page.text
    assert client.get("/reports/monthly?month=2026-13").status_code == 400
    assert client.get("/api/v1/statements?month=2026-13").status_code == 400


def test_ngsi_ld_entities_are_linked_data_and_scoped(demo) -> None:  # noqa: F811
    client, truth, _ = demo
    login(client, "alice", identity("alice").password)
    response = client.get("/ngsi-ld/v1/entities", params={"type": "GPU", "limit": 500, "count": "true"})
    assert response.headers["content-type"].startswith("application/ld+json")
    gpus = response.json()
    assert {g["uuid"]["value"] for g in gpus} == truth.gpus_of["ml-team-a"]
    assert response.headers["NGSILD-Results-Count"] == str(len(gpus))
    gpu = gpus[0]
    assert gpu["id"] == f"urn:ngsi-ld:GPU:{gpu['uuid']['value']}" and gpu["type"] == "GPU"
    assert gpu["@context"][0].endswith("ngsi-ld-core-context-v1.8.jsonld")
    assert gpu["hostedOn"]["type"] == "Relationship"
    assert gpu["hostedOn"]["object"].startswith("urn:ngsi-ld:Node:demo:")
    one = client.get(f"/ngsi-ld/v1/entities/{gpu['id']}")
    assert one.status_code == 200 and one.json()["id"] == gpu["id"]
    node = client.get(f"/ngsi-ld/v1/entities/{gpu['hostedOn']['object']}")
    assert node.status_code == 200 and node.json()["type"] == "Node"
    projects = client.get("/ngsi-ld/v1/entities", params={"type": "ResearchProject"}).json()
    assert [p["namespace"]["value"] for p in projects] == ["ml-team-a"]
    foreign = next(iter(truth.all_gpus - truth.gpus_of["ml-team-a"]))
    assert client.get(f"/ngsi-ld/v1/entities/urn:ngsi-ld:GPU:{foreign}").status_code == 404
    unknown = client.get("/ngsi-ld/v1/entities", params={"type": "Toaster"})
    assert unknown.status_code == 400 and "type" in unknown.json()["detail"]
    client.cookies.clear()
    assert client.get("/ngsi-ld/v1/entities", params={"type": "GPU"}).status_code == 401


def test_a_researchers_cluster_counts_are_their_share_beside_the_capacity(demo) -> None:  # noqa: F811
    client, _, _ = demo
    login(client, "alice", identity("alice").password)
    clusters = client.get("/api/v1/clusters").json()["items"]
    assert clusters
    for cluster in clusters:
        for kind, path in (("node", "nodes"), ("gpu", "gpus"), ("slice", "slices")):
            listed = client.get(f"/api/v1/{path}", params={"cluster": cluster["id"], "limit": 1}).json()["total"]
            assert cluster[f"visible_{kind}_count"] == listed <= cluster[f"{kind}_count"], kind
        assert cluster["visible_gpu_count"] < cluster["gpu_count"]
    assert client.get(f"/api/v1/clusters/{clusters[0]['id']}").json() == clusters[0]
