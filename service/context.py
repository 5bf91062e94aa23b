"""What the routers share: one `ServiceContext` per app, built by the app factory and reached through
`request.app.state.services`. Background parts of the service implement `Component` and are started and stopped
by the app's lifespan, in order and in reverse."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from starlette.requests import HTTPConnection

from service.auth import ApiKeyAuth
from service.jobs import JobManager
from service.metrics import ServiceMetrics
from service.model_service import ModelService
from service.settings import ServiceSettings
from service.storage import Database, EventStore, JobStore

if TYPE_CHECKING:
    from service.live.manager import LiveStreamManager


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class ServiceContext:
    settings: ServiceSettings
    metrics: ServiceMetrics
    auth: ApiKeyAuth
    db: Database
    job_store: JobStore
    event_store: EventStore
    model: ModelService
    jobs: JobManager
    components: list[Component] = field(default_factory=list)
    live: LiveStreamManager | None = None


def get_context(conn: HTTPConnection) -> ServiceContext:
    """FastAPI dependency (works for HTTP routes and WebSockets)."""
    return conn.app.state.services
