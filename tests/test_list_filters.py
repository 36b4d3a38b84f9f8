"""List filters: one declaration per list (web/filters.py) serves its page, its fragment and its API route.

The lists, their routes and their filters are read from the app and the declarations themselves, so a
list added later is checked without touching this file.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, get_type_hints
from urllib.parse import quote_plus

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.params import QueryParameter
from sqlmodel import Session

from domain.access import Principal
from domain.access.local import LocalAuthorizer
from domain.inventory.references import NO_ROW, resolve_cluster, resolve_gpu, resolve_node, resolve_project
from tests.test_access_end_to_end import api_all, demo, identity, login  # noqa: F401  (demo is a fixture)
from web.filters import ClusterRef, GpuRef, NodeRef, ProjectRef, UsageFilter, query_names

API_ONLY = {UsageFilter.__name__}
"""Declarations with no list page: usage is charted on the detail pages, not listed."""
PAGE_ONLY = {"OutboxFilter", "AccessFilter"}
"""Declarations of pages with no API list (the notification outbox, the admin access table)."""
REFERENCES = {id(ClusterRef): "clusters", id(NodeRef): "nodes", id(GpuRef): "gpus", id(ProjectRef): "projects"}
"""Which rows a reference filter names, by its annotation."""
UNPATTERNED_SKIP = {"limit", "offset", "sort"}
"""Not filters: paging and order."""
FRAGMENT = {"HX-Request": "true", "HX-Target": "table"}


@dataclass(frozen=True)
class ListRoutes:
    declaration: type
    pages: tuple[str, ...]
    apis: tuple[str, ...]


def list_routes(app: Litestar) -> dict[str, ListRoutes]:
    """Each declaration by name, with the paths of the list routes that take it as ``filters``."""
    found: dict[str, tuple[type, set[str], set[str]]] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            provider = handler.resolve_dependencies().get("filters")
            if provider is None or "{" in route.path:  # detail pages embed a list; they are not one
                continue
            declaration = provider.dependency
            _, pages, apis = found.setdefault(declaration.__name__, (declaration, set(), set()))
            (apis if route.path.startswith(("/api/", "/ngsi-ld/")) else pages).add(route.path)
    return {name: ListRoutes(d, tuple(sorted(p)), tuple(sorted(a))) for name, (d, p, a) in found.items()}


def paired(app: Litestar) -> list[ListRoutes]:
    """Lists with both a page and an API route."""
    return [r for r in list_routes(app).values() if r.pages and r.apis and r.declaration.__name__ != "Paging"]


def free_text_filters(declaration: type) -> list[str]:
    """Filters that take any text (no pattern, no format): an unknown value must narrow to nothing."""
    hints = get_type_hints(declaration, include_extras=True)
    names = []
    for name, hint in hints.items():
        marks = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, QueryParameter)]
        if name in UNPATTERNED_SKIP or not marks or marks[0].pattern or marks[0].schema_extra or marks[0].name:
            continue
        names.append(name)
    return names


def reference_filters(declaration: type) -> dict[str, str]:
    """``{field: the list it names rows of}`` for the id-or-name filters of a declaration."""
    hints = get_type_hints(declaration, include_extras=True)
    return {name: REFERENCES[id(hint)] for name, hint in hints.items() if id(hint) in REFERENCES}


def tbody(html: str) -> str:
    """The rows of a table fragment (links elsewhere repeat the query string as it was given)."""
    match = re.search(r"<tbody>(.*)</tbody>", html, re.S)
    assert match is not None, html[:500]
    return match.group(1)


def names_of(kind: str, row: dict[str, Any]) -> tuple[str, str]:
    """(short name, long name) of a row, as a filter accepts them."""
    if kind == "clusters":
        return row["name"], f"{row['hub']}/{row['name']}"
    if kind == "nodes":
        return row["hostname"], f"{row['cluster']}/{row['hostname']}"
    if kind == "gpus":
        return row["uuid"], row["uuid"]
    return row["namespace"], f"{row['cluster']}/{row['namespace']}"


def test_every_list_with_an_api_has_a_page_taking_the_same_declaration(demo) -> None:  # noqa: F811
    client, _, _ = demo
    routes = list_routes(client.app)
    for name, found in routes.items():
        if name == "Paging":  # NGSI-LD pages its entities the same way; it is not a list of its own
            continue
        assert found.apis or name in PAGE_ONLY, f"{name}: a page list without its API ({found.pages})"
        assert found.pages or name in API_ONLY, f"{name}: an API list without its page ({found.apis})"
    assert {r.declaration.__name__ for r in paired(client.app)} >= {
        "ClusterFilter",
        "NodeFilter",
        "GpuFilter",
        "SliceFilter",
        "ProjectFilter",
        "FindingFilter",
        "WorkloadFilter",
    }


def test_the_api_documents_exactly_the_declared_parameters(demo) -> None:  # noqa: F811
    client, _, _ = demo
    schema = client.app.openapi_schema.to_schema()
    for found in list_routes(client.app).values():
        for api in found.apis:
            operation = schema["paths"][api]["get"]
            documented = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            assert query_names(found.declaration) <= documented, api
            assert documented - query_names(found.declaration) <= {"type", "count"}, api  # NGSI-LD's own


def test_every_declared_filter_narrows_the_page_and_the_api_alike(demo) -> None:  # noqa: F811
    client, _, _ = demo
    login(client, "admin", identity("admin").password)
    for found in paired(client.app):
        for name in free_text_filters(found.declaration):
            value = f"no-such-{name}"
            for api in found.apis:
                body = client.get(api, params={name: value}).json()
                assert body["total"] == 0 and body["items"] == [], (api, name)
            for page in found.pages:
                fragment = client.get(page, params={name: value}, headers=FRAGMENT)
                assert fragment.status_code == 200, (page, name, fragment.text[:300])
                assert "0\u20130 of 0" in fragment.text, (page, name)  # the pager, typeset with an en dash
    populated = [f for f in paired(client.app) if client.get(f.apis[0]).json()["total"] > 0]
    assert len(populated) >= 5  # the check narrowed lists that had rows to lose


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_name_and_an_id_select_the_same_rows(demo, data: st.DataObject) -> None:  # noqa: F811
    """On every paired list, for every id-or-name filter and any row it can name: the id, the long name and
    (when it names one row) the short name give the same API answer and the same table rows."""
    client, _, _ = demo
    login(client, "admin", identity("admin").password)
    cases = [
        (found, field, kind)
        for found in paired(client.app)
        for field, kind in reference_filters(found.declaration).items()
    ]
    found, field, kind = data.draw(st.sampled_from(cases), label="list and filter")
    rows = api_all(client, f"/api/v1/{kind}")
    row = data.draw(st.sampled_from(rows), label="row")
    short, long = names_of(kind, row)
    ambiguous = Counter(names_of(kind, r)[0] for r in rows)[short] > 1

    for api in found.apis:
        by_id = client.get(api, params={field: row["id"], "limit": 500})
        assert by_id.status_code == 200
        assert client.get(api, params={field: long, "limit": 500}).json() == by_id.json()
        by_short = client.get(api, params={field: short, "limit": 500})
        if ambiguous:
            assert by_short.status_code == 400 and "names several rows" in by_short.json()["detail"]
        else:
            assert by_short.json() == by_id.json()
    for page in found.pages:
        by_id = client.get(page, params={field: row["id"], "limit": 500}, headers=FRAGMENT)
        by_name = client.get(page, params={field: long, "limit": 500}, headers=FRAGMENT)
        assert by_id.status_code == by_name.status_code == 200
        assert tbody(by_name.text) == tbody(by_id.text)


def test_a_researcher_filtering_by_a_name_outside_their_scope_gets_what_an_unknown_name_gets(demo) -> None:  # noqa: F811
    """Names of rows alice may not read (bob's project, its cluster, GPUs and nodes she cannot see), short and
    long, answer exactly as names that exist nowhere: same status, same body, same table."""
    client, _, _ = demo
    alice, bob = identity("alice"), identity("bob")
    login(client, "admin", identity("admin").password)
    everything = {kind: api_all(client, f"/api/v1/{kind}") for kind in ("clusters", "nodes", "gpus", "projects")}
    login(client, "alice", alice.password)
    foreign: dict[str, list[str]] = {}
    for kind, rows in everything.items():
        mine = {r["id"] for r in api_all(client, f"/api/v1/{kind}")}
        names = [name for r in rows if r["id"] not in mine for name in names_of(kind, r)]
        foreign[kind] = list(dict.fromkeys(names))[: None if kind in ("projects", "clusters") else 4]
    assert bob.project[1] in foreign["projects"] and bob.project[0] in foreign["clusters"]

    checked = 0
    for found in paired(client.app):
        for field, kind in reference_filters(found.declaration).items():
            for name in foreign[kind]:
                unknown = f"no-such-{kind}"
                for api in found.apis:
                    seen, nothing = client.get(api, params={field: name}), client.get(api, params={field: unknown})
                    assert (seen.status_code, seen.json()) == (nothing.status_code, nothing.json()), (api, field, name)
                for page in found.pages:
                    seen = client.get(page, params={field: name}, headers=FRAGMENT)
                    nothing = client.get(page, params={field: unknown}, headers=FRAGMENT)
                    assert seen.status_code == nothing.status_code == 200
                    as_given = seen.text.replace(quote_plus(name), "VALUE").replace(name, "VALUE")
                    assert as_given == nothing.text.replace(unknown, "VALUE"), (page, field, name)
                checked += 1
    assert checked >= 10  # every list with a project or cluster filter was tried


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_names_resolve_only_within_the_callers_scope(demo, data: st.DataObject) -> None:  # noqa: F811
    """A name resolves to its row's id exactly when the caller may read that row; otherwise to NO_ROW, the
    answer for a name that exists nowhere, so a name cannot be probed."""
    client, _, engine = demo
    login(client, "admin", identity("admin").password)
    kind = data.draw(st.sampled_from(["clusters", "nodes", "gpus", "projects"]), label="kind")
    row = data.draw(st.sampled_from(api_all(client, f"/api/v1/{kind}")), label="row")
    username = data.draw(st.sampled_from(["alice", "bob", "admin"]), label="caller")
    login(client, username, identity(username).password)
    readable = {r["id"] for r in api_all(client, f"/api/v1/{kind}")}
    resolve = {
        "clusters": resolve_cluster,
        "nodes": resolve_node,
        "gpus": resolve_gpu,
        "projects": resolve_project,
    }[kind]
    caller = Principal(subject=f"user:{username}", name=username, is_admin=identity(username).is_admin)
    scope = LocalAuthorizer(engine).read_scope(caller)
    with Session(engine) as session:
        assert resolve(session, scope, names_of(kind, row)[1]) == (row["id"] if row["id"] in readable else NO_ROW)
        assert resolve(session, scope, f"no-such-{kind}") == NO_ROW
        assert resolve(session, scope, str(row["id"])) == row["id"]  # ids pass as given; the list is scoped
