"""The site's app factory: ``create_app(settings, engine)``; each area registers its own routes."""

from __future__ import annotations

import hashlib

from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.plugins.prometheus import PrometheusConfig
from litestar.static_files import create_static_files_router
from sqlalchemy import Engine

from domain.access import Authorizer
from domain.access.local import LocalAuthorizer
from domain.settings import Settings, SettingsError, require_session_secret
from web.api import API_CONTROLLERS
from web.errors import handle_exception
from web.login import LOGIN_ROUTES
from web.ops import OPS_ROUTES
from web.pages import PAGE_CONTROLLERS
from web.rendering import template_config
from web.security import security_headers
from web.state import SiteContext

SESSION_COOKIE = "ait_session"
SESSION_MAX_AGE = 8 * 3600


def build_authorizer(settings: Settings, engine: Engine) -> Authorizer:
    if settings.auth.mode == "local":
        return LocalAuthorizer(engine)
    raise SettingsError("AI_TELEMETRY_AUTH_MODE=keycloak is not available in this version; use local")


def create_app(settings: Settings, engine: Engine, authorizer: Authorizer | None = None) -> Litestar:
    require_session_secret(settings)
    secret = settings.site.session_secret.get_secret_value() if settings.site.session_secret else ""
    # the session key is derived, so the CSRF HMAC key and the cookie encryption key differ
    session_key = hashlib.sha256(b"ai-telemetry session\0" + secret.encode()).digest()
    context = SiteContext(settings=settings, engine=engine, authorizer=authorizer or build_authorizer(settings, engine))
    secure = settings.site.secure_cookies
    return Litestar(
        route_handlers=[
            *OPS_ROUTES,
            *LOGIN_ROUTES,
            *PAGE_CONTROLLERS,
            *API_CONTROLLERS,
            create_static_files_router(path="/static", directories=[settings.static_dir], include_in_schema=False),
        ],
        state=State({"site": context}),
        template_config=template_config(settings.templates_dir),
        middleware=[
            CookieBackendConfig(
                secret=session_key, key=SESSION_COOKIE, max_age=SESSION_MAX_AGE, httponly=True,
                samesite="lax", secure=secure,
            ).middleware,
            PrometheusConfig(
                app_name="ai_telemetry_site", prefix="ai_telemetry_site", group_path=True,
                exclude=["/metrics", "/healthz", "/readyz", "/static"],
            ).middleware,
        ],
        csrf_config=CSRFConfig(secret=secret, cookie_secure=secure, cookie_samesite="lax", cookie_httponly=True),
        openapi_config=OpenAPIConfig(
            title="AI Telemetry API", version="1.0.0", path="/schema", render_plugins=[JsonRenderPlugin()],
            description="GPU inventory and usage per cluster, node, GPU, MIG slice and research project. "
            "Authenticate with `Authorization: Bearer <token>` (`ai-telemetry token create --user NAME`).",
        ),
        exception_handlers={Exception: handle_exception},
        logging_config=None,  # the process (CLI or test runner) owns logging
        after_request=security_headers(hsts=secure),
    )
