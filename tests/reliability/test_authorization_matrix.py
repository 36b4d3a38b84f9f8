"""The authorization matrix: every route of the site (local mode) and of the receiver, every kind of caller.

Routes come from the apps' route tables, so a route added tomorrow is in the matrix tomorrow. Path
parameters are filled from a fleet where every object belongs to researcher A (alice, team-alpha) or
researcher B (bob, team-beta); expectations follow from the route (public, protected, admin-only, API
or page) and from who owns the ids, never from a per-route list. A parameter the generator cannot fill
fails the test, naming the route.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from litestar import Litestar, get
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from pydantic import BaseModel
from sqlalchemy import Engine, select

from domain.database import session_scope
from domain.models import Cluster, ResearchProject, Workload, utcnow
from tests.conftest import settings_for, sqlite_copy
from tests.reliability.security_support import (
    OWNERS,
    TEAMS,
    Owned,
    csrf_token,
    fleet_template,
    login,
    ownership,
    token_for,
)
from web.app import create_app
from web.filters import query_names
from web.identity import PROTECTED, Visible
from worker.receiver import create_receiver_app

PUBLIC = {
    ("GET", "/healthz"): "liveness",
    ("GET", "/readyz"): "readiness",
    ("GET", "/metrics"): "Prometheus scrape: process metrics and fleet gauges per cluster, no project data",
    ("GET", "/login"): "the login form",
    ("POST", "/login"): "the login itself",
    ("POST", "/logout"): "logging out needs no login",
    ("GET", "/static/{file_path:path}"): "CSS, htmx, favicon",
    ("HEAD", "/static/{file_path:path}"): "CSS, htmx, favicon",
    ("GET", "/schema"): "the OpenAPI document",
    ("GET", "/schema/openapi.json"): "the OpenAPI document",
    ("GET", "/schema/{path:str}"): "unknown schema renderers: 404",
    ("GET", "/ngsi-ld/v1/context.jsonld"): "the JSON-LD @context, vocabulary only",
}
"""The only routes anonymous callers may use, and why. Everything else must declare ``principal``."""

RECEIVER_PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}

ID_PARAMS = {"cluster_id", "node_id", "gpu_id", "project_id", "finding_id", "workload_id", "entity_id"}
"""Path parameters naming an owned object: filled with A's and then B's ids."""
ID_FILTERS = {"cluster": "cluster_id", "project": "project_id", "node": "node_id", "gpu": "gpu_id"}
"""Optional query parameters filtering by an owned object's id: tried with the other team's id too."""
PUBLIC_PATH_VALUES = {"file_path": "htmx.min.js", "path": "openapi.yaml"}
NGSI_TYPES = ("Cluster", "Node", "GPU", "GPUSlice", "ResearchProject")
SPECIAL = {"request", "state", "data", "self", "headers", "cookies", "scope", "socket", "body", "query"}


def required_query(name: str) -> list[str]:
    """Values for required query parameters; an unknown one fails the matrix, naming it."""
    since = (utcnow() - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    known = {"since": [since], "model": ["a100"], "type": list(NGSI_TYPES), "pod": ["matrix-pod"]}
    if name not in known:
        raise LookupError(f"no value for the required query parameter {name!r}")
    return known[name]


FORM_VALUES: dict[str, Any] = {
    "kind": "user",
    "name": "admin",  # grants and revokes to the admin, so the researchers' own grants stay as they are
    "hours": "1",
    "back": "/admin/access",
    "pod": "matrix-pod",  # "still using it" for a pod of the project named in the path
    "reason": "still training",
    "days": "1",
    "username": "matrix-user",  # the user pages create, change and delete a user of their own, never a caller
    "password": "matrix-user-password",
}
FORM_IDS = {"project_id": "project_id", "projects": "project_id"}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: HTTPRouteHandler

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{(\w+):", self.path)

    @property
    def api(self) -> bool:
        return self.path.startswith(("/api/", "/ngsi-ld/"))

    @property
    def unsafe(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS")

    @property
    def owned(self) -> bool:
        return any(p in ID_PARAMS for p in self.params)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _requires(handler: HTTPRouteHandler, target: str) -> bool:
    """Does the handler ask, directly or through its dependencies, for the dependency ``target``?"""
    dependencies = handler.resolve_dependencies()
    stack = [name for name in handler.parsed_fn_signature.parameters if name in dependencies]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name == target:
            return True
        if name in seen:
            continue
        seen.add(name)
        provider = dependencies[name].dependency
        provider = getattr(provider, "func", provider)  # sync_to_thread providers are wrapped
        stack += [n for n in inspect.signature(provider).parameters if n in dependencies]
    return False


def protected(route: Route) -> bool:
    return _requires(route.handler, "principal")


def admin_only(route: Route) -> bool:
    return _requires(route.handler, "admin")


def routes_of(app: Litestar, *, options: bool = False) -> list[Route]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods):
                if (method == "OPTIONS") == options:
                    found.append(Route(method, route.path, handler))
    return sorted(found, key=lambda r: (r.path, r.method))


def _form_model(handler: HTTPRouteHandler) -> type[BaseModel] | None:
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return None
    model = data.annotation
    assert isinstance(model, type) and issubclass(model, BaseModel), f"{handler}: form data is not a model"
    return model


@dataclass
class Call:
    route: Route
    url: str
    owner: str | None
    """Team whose ids fill the path or a filter; None when the call names no owned object."""
    form: dict[str, Any] | None = None
    htmx: bool = False


_counter = itertools.count()


def _fill_path(route: Route, owner: str | None, owned: dict[str, Owned]) -> str:
    path = route.path
    for param in route.params:
        if param in ID_PARAMS:
            value = owned[owner].first(param)  # type: ignore[index]
        elif param in PUBLIC_PATH_VALUES and route.key in PUBLIC:
            value = PUBLIC_PATH_VALUES[param]
        else:
            pytest.fail(f"{route}: the matrix cannot fill the path parameter {param!r}; teach it (ID_PARAMS)")
        path = re.sub(r"\{" + param + r":[^}]+\}", str(value), path)
    return path


def _form_body(route: Route, form: type[BaseModel], owner: str | None, owned: dict[str, Owned]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, info in form.model_fields.items():
        if name in FORM_IDS:
            body[name] = owned[owner].first(FORM_IDS[name])  # type: ignore[index]
        elif name == "team":
            body[name] = f"matrix-{next(_counter)}"
        elif name in FORM_VALUES:
            body[name] = FORM_VALUES[name]
        elif info.is_required():
            pytest.fail(f"{route}: the matrix cannot fill the form field {name!r}; teach it (FORM_VALUES)")
    return body


def query_parameters(handler: HTTPRouteHandler) -> list[str]:
    """A route's query parameters: its own and, for a list, those of its one filter declaration."""
    names = list(handler.parsed_fn_signature.parameters)
    dependencies = handler.resolve_dependencies()
    if "filters" in dependencies:
        names += sorted(query_names(dependencies["filters"].dependency))
    return names


def calls_for(route: Route, owned: dict[str, Owned]) -> list[Call]:
    """Requests that exercise ``route``: once per owning team where it names owned objects."""
    handler = route.handler
    dependencies = set(handler.resolve_dependencies())
    parameters = handler.parsed_fn_signature.parameters
    query = [n for n in parameters if n not in dependencies and n not in SPECIAL and n not in route.params]
    required = [n for n in query if not parameters[n].has_default]
    if "filters" in dependencies:  # a list's filters are declared once, in web.filters, not in the handler
        declaration = handler.resolve_dependencies()["filters"].dependency
        query += sorted(query_names(declaration))
        required += [f.name for f in fields(declaration) if f.default is MISSING and f.default_factory is MISSING]
    form = _form_model(handler)
    names_owned = route.owned or bool(form and set(form.model_fields) & set(FORM_IDS))
    try:
        combos = [
            urlencode(dict(zip(required, values, strict=True)))
            for values in itertools.product(*(required_query(n) for n in required))
        ]
    except LookupError as exc:
        pytest.fail(f"{route}: {exc}; teach the matrix (required_query)")

    calls = []
    for owner in list(TEAMS) if names_owned else [None]:
        path = _fill_path(route, owner, owned)
        body = _form_body(route, form, owner, owned) if form is not None else None
        for combo in combos:
            url = path + (f"?{combo}" if combo else "")
            calls.append(Call(route, url, owner, body))
            if not route.api and not route.unsafe and route.key not in PUBLIC:
                calls.append(Call(route, url, owner, body, htmx=True))
    if names_owned or route.unsafe:
        return calls
    # list routes: also filtered by each team's ids, which must not open the other team's data
    filters = [n for n in query if n in ID_FILTERS]
    for base in list(calls):
        for team, name in itertools.product(TEAMS, filters):
            sep = "&" if "?" in base.url else "?"
            value = owned[team].first(ID_FILTERS[name])
            calls.append(Call(route, f"{base.url}{sep}{name}={value}", team, base.form, base.htmx))
    return calls


@dataclass
class Caller:
    name: str
    client: TestClient
    headers: dict[str, str] = field(default_factory=dict)
    team: str | None = None
    admin: bool = False
    anonymous: bool = False
    bad: bool = False
    csrf: str | None = None

    def send(self, call: Call) -> Any:
        headers = dict(self.headers)
        if call.htmx:
            headers.update({"HX-Request": "true", "HX-Target": "table"})
        if call.route.unsafe and self.csrf:
            headers["x-csrftoken"] = self.csrf
        return self.client.request(call.route.method, call.url, headers=headers, data=call.form, follow_redirects=False)


def running_matrix_pod(engine: Engine) -> None:
    """An open workload of ``matrix-pod`` in every project: only a running pod can be exempted."""
    with session_scope(engine) as session:
        for project_id, namespace, cluster in session.execute(
            select(ResearchProject.id, ResearchProject.namespace, Cluster.name).join(
                Cluster, Cluster.id == ResearchProject.cluster_id
            )
        ).all():
            session.add(
                Workload(
                    trace_id=uuid.uuid4().hex,
                    cluster=cluster,
                    namespace=namespace,
                    pod=FORM_VALUES["pod"],
                    started_at=utcnow(),
                    project_id=project_id,
                    workload_key=uuid.uuid4().hex,
                )
            )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fleet_template(tmp_path_factory.mktemp("security-fleet"))


@dataclass
class World:
    engine: Engine
    app: Litestar
    owned: dict[str, Owned]
    callers: list[Caller]


@pytest.fixture
def world(template: Path, tmp_path: Path) -> Iterator[World]:
    engine = sqlite_copy(template, tmp_path)
    app = create_app(settings_for(engine), engine)
    owned = ownership(engine)
    running_matrix_pod(engine)  # after the ownership markers: the same pod name is in both teams' projects

    def client() -> TestClient:  # not entered: several clients of one app, and the site has no lifespan hooks
        return TestClient(app)

    try:
        callers = [Caller("anonymous", client(), anonymous=True)]
        callers[0].csrf = csrf_token(callers[0].client)
        for username in ("alice", "bob", "admin"):
            caller = Caller(
                username,
                client(),
                admin=username == "admin",
                team=next((t for t, u in OWNERS.items() if u == username), None),
            )
            login(caller.client, username)
            caller.csrf = csrf_token(caller.client)
            callers.append(caller)
        callers.append(
            Caller("alice-token", client(), {"Authorization": f"Bearer {token_for(engine, 'alice')}"}, team="alpha")
        )
        callers.append(
            Caller("bad-token", client(), {"Authorization": "Bearer ait_" + "n0t-a-real-token" * 3}, bad=True)
        )
        yield World(engine, app, owned, callers)
    finally:
        engine.dispose()


def _leaks(text: str, names: set[str]) -> list[str]:
    return sorted(name for name in names if name in text)


def _expect_login_required(route: Route, call: Call, response: Any) -> str | None:
    if route.api:
        if response.status_code != 401 or response.headers.get("content-type") != "application/problem+json":
            return f"expected 401 problem JSON, got {response.status_code} {response.headers.get('content-type')}"
        return None
    if call.htmx:
        if response.status_code != 401 or response.headers.get("hx-redirect") != "/login" or response.text:
            return f"expected an empty 401 with HX-Redirect: /login, got {response.status_code}"
        return None
    location = response.headers.get("location", "")
    if response.status_code != 303 or not location.startswith("/login?next=%2F"):
        return f"expected 303 to /login?next=..., got {response.status_code} {location!r}"
    return None


def check(caller: Caller, call: Call, response: Any, owned: dict[str, Owned]) -> str | None:  # noqa: PLR0911, PLR0912
    """What ``caller`` must get for ``call``; a message when it got something else."""
    route = call.route
    status = response.status_code
    every_name = set().union(*(o.names for o in owned.values()))
    if status >= 500:
        return f"server error {status}"
    if route.key in PUBLIC:
        if caller.anonymous or caller.bad:
            leaked = _leaks(
                response.text, every_name - ({f"cluster-{t}" for t in TEAMS} if route.path == "/metrics" else set())
            )
            if leaked:
                return f"public route shows fleet data to {caller.name}: {leaked[:3]}"
        return None
    if caller.anonymous:
        return _expect_login_required(route, call, response)
    if caller.bad:
        if route.unsafe:  # no cookie, hence no CSRF token: refused before authentication
            return None if status == 403 else f"expected 403 (CSRF) for a bearer call of an unsafe route, got {status}"
        return _expect_login_required(route, call, response)
    if route.unsafe and "Authorization" in caller.headers:
        return None if status == 403 else f"expected 403 (CSRF) for a bearer call of an unsafe route, got {status}"
    if admin_only(route) and not caller.admin:
        return None if status == 403 else f"admin-only route answered {status} to {caller.name}"
    if caller.admin or call.owner in (None, caller.team):
        if status >= 400:
            return f"expected success, got {status}: {response.text[:200]}"
        if not caller.admin:
            other = next(t for t in TEAMS if t != caller.team)
            leaked = _leaks(response.text + json.dumps(dict(response.headers)), owned[other].names)
            if leaked:
                return f"shows team {other}'s {leaked[:3]}"
        return None
    # a researcher naming the other team's object: not found (or forbidden), and nothing of it shown
    if route.owned or route.unsafe:
        if status not in (403, 404):
            return f"IDOR: {caller.name} got {status} for team {call.owner}'s object"
    elif status >= 400:
        return f"filtering by another team's id should give an empty list, got {status}"
    leaked = _leaks(response.text, owned[call.owner].names)  # type: ignore[index]
    return f"IDOR: shows team {call.owner}'s {leaked[:3]}" if leaked else None


def test_every_unprotected_route_is_on_the_public_allowlist(world: World, reliability) -> None:
    routes = routes_of(world.app)
    unprotected = {r.key for r in routes if not protected(r)}
    assert unprotected == set(PUBLIC), (
        f"routes without the principal dependency that are not on the public allowlist: "
        f"{sorted(unprotected - set(PUBLIC))}; allowlisted but protected or gone: {sorted(set(PUBLIC) - unprotected)}"
    )
    admin = sorted(str(r) for r in routes if admin_only(r))
    assert admin, "no admin-only route found: the admin dependency is not detected"

    # the guard works: a route added without the dependency is caught, one with it is not
    @get("/api/v1/forgotten", sync_to_thread=False)
    def forgotten() -> dict[str, str]:
        return {"leak": "yes"}

    @get("/api/v1/remembered", sync_to_thread=False, dependencies=PROTECTED)
    def remembered(visible: Visible) -> dict[str, str]:
        return {"ok": "yes"}

    world.app.register(forgotten)
    world.app.register(remembered)
    now = {r.key for r in routes_of(world.app) if not protected(r)}
    assert now - set(PUBLIC) == {("GET", "/api/v1/forgotten")}
    reliability.record(
        area="Security",
        tried="Derived each site route's protection from its dependencies (principal, admin) in the route table",
        held=f"exactly the {len(PUBLIC)} allowlisted routes are public; {len(routes) - len(PUBLIC)} need a login, "
        f"{len(admin)} of them an admin",
        routes=len(routes),
        public=len(PUBLIC),
        admin_only=len(admin),
    )


def test_authorization_matrix_over_every_route_and_caller(world: World, reliability) -> None:
    routes = routes_of(world.app)
    failures: list[str] = []
    requests = 0
    outcomes: Counter[str] = Counter()
    idor = 0
    data_calls = 0
    """Unfiltered calls where the admin sees both teams' objects: where a leak would show."""
    calls = [call for route in routes for call in calls_for(route, world.owned)]
    # state-changing calls last, logging in and out last of all; the admin last in each call
    calls.sort(key=lambda c: (c.route.unsafe, c.route.key in PUBLIC))
    for call in calls:
        for caller in sorted(world.callers, key=lambda c: c.admin):
            response = caller.send(call)
            requests += 1
            outcomes[f"{response.status_code}"] += 1
            problem = check(caller, call, response, world.owned)
            if caller.admin and call.owner is None and protected(call.route) and not call.route.unsafe:
                data_calls += all(_leaks(response.text, o.names) for o in world.owned.values())
            if caller.team and call.owner not in (None, caller.team) and not caller.admin:
                idor += 1
            if problem:
                failures.append(
                    f"{caller.name:11} {call.route.method:4} {call.url}{' (htmx)' if call.htmx else ''}: {problem}"
                )
    assert not failures, f"{len(failures)} of {requests} calls broke the rules:\n" + "\n".join(failures[:60])
    assert data_calls >= 20, f"only {data_calls} unfiltered calls show both teams' data to the admin: fixture broken?"
    reliability.record(
        area="Security",
        tried=f"Called every site route ({len(routes)} method and path pairs) as anonymous, researcher A, "
        "researcher B, admin, A's API token and a bad token, with A's and B's ids in paths, filters and forms, "
        "pages and htmx fragments",
        held="anonymous and bad tokens got 401 / login redirects / HX-Redirect, researchers 403 on admin routes "
        f"and 404/403 or nothing of the other team on all {idor} cross-team calls",
        routes=len(routes),
        callers=len(world.callers),
        requests=requests,
        cross_team_calls=idor,
        lists_with_both_teams=data_calls,
        statuses=" ".join(f"{k}:{v}" for k, v in sorted(outcomes.items())),
    )


def test_options_preflight_never_answers_data(world: World, reliability) -> None:
    anonymous = world.callers[0].client
    options = routes_of(world.app, options=True)
    for route in options:
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        response = anonymous.options(path)
        assert response.status_code == 204 and not response.content, f"{route}: {response.status_code}"
    reliability.record(
        area="Security",
        tried=f"Sent OPTIONS to all {len(options)} paths anonymously",
        held="every one answered 204 with an empty body",
        paths=len(options),
    )


def test_receiver_routes_need_the_webhook_credentials(template: Path, tmp_path: Path, reliability) -> None:
    engine = sqlite_copy(template, tmp_path)
    secret = "webhook-token-for-the-matrix-0123456789"
    settings = settings_for(engine, receiver={"webhook_token": secret})
    site = create_app(settings, engine)
    app = create_receiver_app(settings, engine)
    routes = routes_of(app)
    pat = token_for(engine, "admin")
    with TestClient(site) as browser, TestClient(app) as client:
        login(browser, "admin")
        cookies = dict(browser.cookies)
        callers = {
            "anonymous": {},
            "bad token": {"Authorization": "Bearer wrong-token"},
            "basic auth": {"Authorization": "Basic " + "YWRtaW46YWRtaW4="},
            "admin's site token": {"Authorization": f"Bearer {pat}"},
            "admin's site session cookie": {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
        }
        checked = 0
        for route in routes:
            for name, headers in callers.items():
                response = client.request(route.method, route.path, headers=headers, content=b"{}")
                checked += 1
                if route.key in RECEIVER_PUBLIC:
                    assert response.status_code < 400, f"{route} {name}: {response.status_code}"
                else:
                    assert response.status_code == 401, f"{route} as {name}: {response.status_code}"
            if route.key not in RECEIVER_PUBLIC:
                good = client.request(
                    route.method, route.path, headers={"Authorization": f"Bearer {secret}"}, content=b"{}"
                )
                assert good.status_code == 400, good.text  # authenticated, and the empty payload is refused
    engine.dispose()
    assert {r.key for r in routes} - RECEIVER_PUBLIC, "the receiver has no protected route"
    reliability.record(
        area="Security",
        tried=f"Called every receiver route ({len(routes)}) anonymously, with a wrong bearer token, Basic auth, "
        "the site's personal access token and the site's session cookie",
        held="only health, readiness and metrics answered; the webhook said 401 to all but its own token",
        routes=len(routes),
        requests=checked,
    )
