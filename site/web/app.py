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

from domain.access.factory import SiteAccess, build_site_access
from domain.access.login_sessions import LOGIN_SESSION_SECONDS
from domain.http_methods import answer_head
from domain.settings import Settings, require_session_secret
from web.api import API_CONTROLLERS
from web.csrf import session_bound_csrf
from web.errors import handle_exception
from web.limits import body_limit
from web.login import LOGIN_ROUTES
from web.oidc import OIDC_ROUTES
from web.ops import OPS_ROUTES
from web.pages import PAGE_CONTROLLERS
from web.pages.admin import ADMIN_CONTROLLERS
from web.pages.users import USER_CONTROLLERS
from web.rendering import template_config
from web.security import no_store, site_security_headers
from web.state import SiteContext

SESSION_COOKIE = "ait_session"


def create_app(settings: Settings, engine: Engine, access: SiteAccess | None = None) -> Litestar:
    """The site; ``access`` defaults to what the settings' auth mode builds (:mod:`domain.access.factory`)."""
    require_session_secret(settings)
    secret = settings.site.session_secret.get_secret_value() if settings.site.session_secret else ""
    # the session key is derived, so the CSRF HMAC key and the cookie encryption key differ
    session_key = hashlib.sha256(b"ai-telemetry session\0" + secret.encode()).digest()
    access = access or build_site_access(settings, engine)
    context = SiteContext(
        settings=settings,
        engine=engine,
        authorizer=access.authorizer,
        access_admin=access.admin,
        password_login=access.password_login,
        redirect_login=access.redirect_login,
        access_checks=access.checks,
    )
    login_routes = OIDC_ROUTES if access.redirect_login is not None else LOGIN_ROUTES
    secure = settings.site.secure_cookies
    csrf = CSRFConfig(secret=secret, cookie_secure=secure, cookie_samesite="lax", cookie_httponly=True)
    app = Litestar(
        route_handlers=[
            *OPS_ROUTES,
            *login_routes,
            *PAGE_CONTROLLERS,
            *ADMIN_CONTROLLERS,
            *USER_CONTROLLERS,
            *API_CONTROLLERS,
            create_static_files_router(path="/static", directories=[settings.static_dir], include_in_schema=False),
        ],
        state=State({"site": context}),
        template_config=template_config(settings.templates_dir),
        middleware=[
            body_limit(settings.site.max_body_bytes),
            CookieBackendConfig(
                secret=session_key,
                key=SESSION_COOKIE,
                max_age=LOGIN_SESSION_SECONDS,
                httponly=True,
                samesite="lax",
                secure=secure,
            ).middleware,
            PrometheusConfig(
                app_name="ai_telemetry_site",
                prefix="ai_telemetry_site",
                group_path=True,
                exclude=["/metrics", "/healthz", "/readyz", "/static"],
            ).middleware,
            session_bound_csrf(csrf),  # after the session middleware: it reads the session
        ],
        openapi_config=OpenAPIConfig(
            title="AI Telemetry API",
            version="1.0.0",
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
            description="GPU inventory and usage per cluster, node, GPU, MIG slice and research project. "
            "Authenticate with `Authorization: Bearer <token>`: in local mode a personal access token "
            "(`ai-telemetry token create --user NAME`), in Keycloak mode an access token from the realm "
            "(client credentials grant of an API client).",
        ),
        exception_handlers={Exception: handle_exception},
        request_max_body_size=settings.site.max_body_bytes,
        logging_config=None,  # the process (CLI or test runner) owns logging
        before_send=[site_security_headers, no_store],
    )
    return answer_head(app)
