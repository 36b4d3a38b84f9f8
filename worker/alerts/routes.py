"""``POST /webhooks/alertmanager``: thin route around :class:`~worker.alerts.intake.AlertIntake`.

Answers, all JSON::

    200  {"status": "ok", "received", "new", "duplicates", ...}   persisted (or already stored)
    400  {"error": "invalid payload", "field": "alerts[3].startsAt", "detail": ...}
    401  missing or invalid credentials (WWW-Authenticate: Bearer)
    403  a valid Keycloak token meant for another audience
    413  body above AI_TELEMETRY_RECEIVER_MAX_BODY_BYTES
    503  cannot persist, cannot fetch the realm's keys, or the body did not arrive in full within
         AI_TELEMETRY_HTTP_REQUEST_TIMEOUT_SECONDS (Retry-After): Alertmanager retries 5xx, never 4xx

Nothing else: no 5xx but those 503s, whatever the body. The body is read as UTF-8 JSON whatever its
Content-Type says (Alertmanager sends ``application/json``; curl's default form type works too), so
there is no 415. Credentials are checked before the body is read.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import MediaType, Request, Response, post
from litestar.datastructures import State
from litestar.exceptions.http_exceptions import InternalServerException, RequestEntityTooLarge
from litestar.types import ControllerRouterHandler

from domain.access import AuthorizationUnavailable, Forbidden, NotAuthenticated
from domain.http_headers import RETRY_AFTER
from worker.alerts.auth import Caller
from worker.alerts.intake import AlertIntake, PersistenceFailed
from worker.alerts.payload import InvalidPayload
from worker.areas import AreaRoutes, RouteContext

STATE_KEY = "alerts"
WEBHOOK_PATH = "/webhooks/alertmanager"


def alert_intake(state: State) -> AlertIntake:
    intake: AlertIntake = state[STATE_KEY]
    return intake


def _answer(intake: AlertIntake, status: int, body: dict[str, Any], **headers: str) -> Response[dict[str, Any]]:
    intake.metrics.webhook_requests.labels(code=str(status)).inc()
    return Response(body, status_code=status, headers=headers or None, media_type=MediaType.JSON)


def _unauthenticated(intake: AlertIntake, reason: str) -> Response[dict[str, Any]]:
    challenge = 'Bearer realm="ai-telemetry", error="invalid_token"'
    return _answer(intake, 401, {"error": "unauthenticated", "detail": reason}, **{"www-authenticate": challenge})


async def _authenticate(intake: AlertIntake, authorization: str | None) -> Caller | Response[dict[str, Any]]:
    """The caller, or the 401 / 403 / 503 answer."""
    try:
        if intake.authenticator.verifier is None:
            return intake.authenticate(authorization)
        # may fetch the realm's keys over the network: off the event loop
        return await anyio.to_thread.run_sync(intake.authenticate, authorization)
    except NotAuthenticated as exc:
        return _unauthenticated(intake, str(exc))
    except Forbidden as exc:
        return _answer(intake, 403, {"error": "forbidden", "detail": str(exc)})
    except AuthorizationUnavailable as exc:
        return _unavailable(intake, str(exc))


def _unavailable(intake: AlertIntake, detail: str) -> Response[dict[str, Any]]:
    return _answer(intake, 503, {"error": "unavailable", "detail": detail}, **RETRY_AFTER)


@post(WEBHOOK_PATH, media_type=MediaType.JSON, status_code=200, include_in_schema=False)
async def alertmanager_webhook(request: Request[Any, Any, Any], state: State) -> Response[dict[str, Any]]:
    """Receive an Alertmanager v4 webhook; 2xx only once every alert receipt is stored."""
    intake = alert_intake(state)
    caller = await _authenticate(intake, request.headers.get("authorization"))
    if isinstance(caller, Response):
        return caller
    try:
        body = await request.body()
    except RequestEntityTooLarge:
        return _answer(
            intake, 413, {"error": "payload too large", "detail": f"the limit is {intake.max_body_bytes} bytes"}
        )
    except InternalServerException:  # the body stopped short: the client left, or was cut off as too slow
        detail = "the body was not received in full; nothing was stored, retry"
        return _answer(intake, 503, {"error": "request timeout", "detail": detail}, **RETRY_AFTER)
    try:
        parsed = intake.parse(body)
    except InvalidPayload as exc:
        return _answer(intake, 400, {"error": "invalid payload", "field": exc.field, "detail": exc.message})
    try:
        receipt = await anyio.to_thread.run_sync(intake.persist, parsed, limiter=intake.persist_limiter)
    except PersistenceFailed as exc:
        return _unavailable(intake, f"could not persist the alerts ({exc}); retry")
    return _answer(
        intake,
        200,
        {
            "status": "ok",
            "received": receipt.received,
            "new": receipt.new,
            "duplicates": receipt.duplicates,
            "workloads_opened": receipt.workloads_opened,
            "workloads_closed": receipt.workloads_closed,
            "caller": caller.kind,
        },
    )


def webhook_routes() -> list[ControllerRouterHandler]:
    """The Alertmanager webhook."""
    return [alertmanager_webhook]


def routes(context: RouteContext) -> AreaRoutes:
    """The Alertmanager webhook and the intake its handler reads from the app state."""
    intake = AlertIntake(
        context.settings, context.engine, metrics=context.metrics, tracer=context.tracer, signals=context.signals
    )
    return AreaRoutes(handlers=webhook_routes(), state={STATE_KEY: intake}, on_shutdown=(intake.close,))
