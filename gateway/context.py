"""What a handler receives: the request, its route, who is calling, and the validated input."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from aiohttp import web

if TYPE_CHECKING:
    from gateway.app import Services
    from gateway.config import Config, Route


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``organization_id`` is the only tenant a handler may touch."""

    kind: str  # session | admin | cron | embed_token | anonymous
    organization_id: UUID | None = None
    user_id: UUID | None = None
    email: str | None = None
    name: str | None = None
    role: str | None = None
    must_change_password: bool = False
    session_hash: bytes | None = None
    session_expires: datetime | None = None
    embed_token_id: UUID | None = None


ANONYMOUS = Principal(kind="anonymous")


@dataclass
class Ctx:
    request: web.Request
    route: "Route"
    config: "Config"
    services: "Services"
    request_id: str
    client_ip: str
    params: dict[str, str]
    principal: Principal = ANONYMOUS
    plan: str | None = None  # the organization's current tier, when there is an organization
    org_status: str | None = None
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    raw_body: bytes = b""
    extras: dict[str, Any] = field(default_factory=dict)  # what an auth method found (e.g. the embed token row)

    @property
    def org_id(self) -> UUID:
        """The caller's organization; routes that use it require an auth method that sets it."""
        assert self.principal.organization_id is not None, "route has no tenant"
        return self.principal.organization_id

    @property
    def settings(self):  # noqa: ANN201 - Settings, imported lazily to avoid a cycle
        return self.services.settings

    @property
    def db(self):  # noqa: ANN201 - asyncpg.Pool
        return self.services.pool

    def can(self, feature: str) -> bool:
        """The same rule as the route gate; every ``canEdit`` flag comes from here."""
        return self.config.plans.has_feature(self.plan, feature)
