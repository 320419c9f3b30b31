"""The ASGI app: dialect routes + files + /health, behind auth, with problem+json errors.

`build_services(settings)` opens the real store and blobs; tests build `Services` with their
own. Dialects plug in through DIALECT_ROUTES and RENDERERS (the JSON shape of a prediction
in reads and webhooks, picked by prediction.dialect), nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from dreamserve.api import files, replicate
from dreamserve.api.auth import AuthMiddleware
from dreamserve.api.context import Services, services_of
from dreamserve.api.errors import EXCEPTION_HANDLERS
from dreamserve.api.files import FileService
from dreamserve.blobs import Blobs
from dreamserve.config import Settings
from dreamserve.jobs.model import Prediction, Store
from dreamserve.service import PredictionService, health_report

log = logging.getLogger("dreamserve.api")

__all__ = ["Services", "build_services", "create_app", "render_webhook"]

PROTECTED_PREFIXES = ("/v1/",)
WEBHOOK_SECRET_KEY = "webhook_secret"

DIALECT_ROUTES: list[BaseRoute] = [*replicate.routes]
RENDERERS: dict[str, Callable[[Prediction, Settings], dict[str, Any]]] = {
    replicate.DIALECT: replicate.render,
}


def render_webhook(prediction: Prediction, settings: Settings) -> dict[str, Any]:
    """The webhook body for a prediction, in the wire format of the dialect that created it."""
    return RENDERERS[prediction.dialect](prediction, settings)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def build_services(settings: Settings) -> Services:
    """Open the store and blobs under the data dir and wire the services over them."""
    from dreamserve.blobs import open_blobs
    from dreamserve.jobs.store import open_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_url, max_attempts=settings.max_attempts)
    blobs = open_blobs(settings)
    # Kept in the store so every API process of a scaled-out deployment signs alike.
    secret = settings.webhook_secret or store.get_or_create_meta(
        WEBHOOK_SECRET_KEY, new_webhook_secret
    )
    return wire_services(settings, store, blobs, secret)


def wire_services(settings: Settings, store: Store, blobs: Blobs, secret: str) -> Services:
    """The services over an opened store and blobs (tests pass their own)."""
    return Services(
        settings=settings,
        store=store,
        blobs=blobs,
        predictions=PredictionService(store),
        files=FileService(store, blobs, settings),
        webhook_secret=secret,
    )


def _queue_depth(services: Services) -> int | None:
    try:
        return services.store.queue_depth()
    except Exception:  # the store does not answer: not ready, but /health itself still answers
        log.exception("health check: the store did not answer")
        return None


async def health(request: Request) -> Response:
    """Liveness (it answers) and readiness (store reachable, a worker alive): 200 or 503."""
    services = services_of(request)
    depth = await asyncio.to_thread(_queue_depth, services)
    extra = services.health() if services.health is not None else {}
    ready, body = health_report(depth is not None, {"queue_depth": depth, **extra})
    return JSONResponse(body, status_code=200 if ready else 503)


def create_app(services: Services) -> Starlette:
    app = Starlette(
        routes=[Route("/health", health), *DIALECT_ROUTES, *files.routes],
        middleware=[Middleware(AuthMiddleware, store=services.store, prefixes=PROTECTED_PREFIXES)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.services = services
    return app
