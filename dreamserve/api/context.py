"""What every route reaches through the app: settings, store, blobs and the services.

One `Services` per process, built by app.build_services (or by tests with doubles) and handed
to create_app; routes read it with `services_of(request)` instead of closing over globals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from dreamserve.config import Settings
from dreamserve.jobs.model import Store
from dreamserve.service import PredictionService

if TYPE_CHECKING:
    from dreamserve.api.files import FileService
    from dreamserve.blobs import Blobs

HealthFn = Callable[[], dict[str, Any]]


@dataclass
class Services:
    settings: Settings
    store: Store
    blobs: Blobs
    predictions: PredictionService
    files: FileService
    webhook_secret: str
    # Set by the server once workers run: {"workers": N, "workers_alive": k, ...}; None means
    # this process runs no workers (tests, API-only deployments) and is ready when the store is.
    health: HealthFn | None = None


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services
