"""Process settings, read once from the environment.

Every variable is documented in README.md ("Configuration"). Secrets are kept in the frozen
dataclass but never rendered: ``repr`` of a Settings shows only whether each secret is set.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _secret(name: str) -> str | None:
    # HTTP strips spaces around header values, so a key with surrounding spaces could never match;
    # strip it here, and a blank one counts as unset (fail closed).
    value = os.environ.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    data_dir: Path = ROOT / "var"
    endpoints_file: Path = ROOT / "endpoints.yaml"
    plans_file: Path = ROOT / "plans.yaml"
    public_base_url: str = "http://127.0.0.1:8080"
    app_origins: tuple[str, ...] = ()
    rate_limit_multiplier: float = 1.0
    trust_forwarded_for: bool = False
    log_level: str = "info"
    session_cache_seconds: float = 30.0
    sandbox: bool = False  # start local fakes for services without credentials (`gateway serve` turns it on)
    internal_base_url: str | None = None  # how in-process fakes reach this gateway (sandbox webhooks)
    admin_api_key: str | None = field(default=None, repr=False)
    cron_secret: str | None = field(default=None, repr=False)
    vapi_api_key: str | None = field(default=None, repr=False)
    vapi_webhook_secret: str | None = field(default=None, repr=False)
    vapi_base_url: str = "https://api.vapi.ai"
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_base_url: str | None = None  # None: the SDK's own hosts
    stripe_secret_key: str | None = field(default=None, repr=False)
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    stripe_base_url: str | None = None  # None: api.stripe.com
    calcom_base_url: str = "https://api.cal.com/v2"
    smtp_url: str | None = field(default=None, repr=False)  # may carry a password
    mail_from: str = "AI Receptionist <no-reply@localhost>"
    twilio_account_sid: str | None = None
    twilio_api_key_sid: str | None = None
    twilio_api_key_secret: str | None = field(default=None, repr=False)
    twilio_twiml_app_sid: str | None = None

    @property
    def https(self) -> bool:
        return self.public_base_url.startswith("https://")

    @property
    def session_cookie_name(self) -> str:
        # NextAuth's names, so an existing NextAuth front end keeps working.
        return "__Secure-next-auth.session-token" if self.https else "next-auth.session-token"

    @property
    def csrf_cookie_name(self) -> str:
        return "__Host-next-auth.csrf-token" if self.https else "next-auth.csrf-token"

    def describe(self) -> dict[str, object]:
        """Settings for a start-up log line: secrets reduced to set/unset."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = "set" if value else "unset"
            elif f.name == "database_url" and value:
                value = "set"
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def load_settings(**overrides: object) -> Settings:
    env = os.environ
    port = int(env.get("PORT", "8080"))
    host = env.get("HOST", "127.0.0.1")
    values: dict[str, object] = dict(
        host=host,
        port=port,
        database_url=env.get("DATABASE_URL") or None,
        data_dir=Path(env.get("GATEWAY_DATA_DIR") or ROOT / "var").resolve(),
        endpoints_file=Path(env.get("GATEWAY_ENDPOINTS") or ROOT / "endpoints.yaml"),
        plans_file=Path(env.get("GATEWAY_PLANS") or ROOT / "plans.yaml"),
        public_base_url=(env.get("PUBLIC_BASE_URL") or f"http://{host}:{port}").rstrip("/"),
        app_origins=tuple(o.strip().rstrip("/") for o in env.get("APP_ORIGINS", "").split(",") if o.strip()),
        rate_limit_multiplier=float(env.get("RATE_LIMIT_MULTIPLIER", "1") or 1),
        trust_forwarded_for=env.get("TRUST_FORWARDED_FOR", "") in ("1", "true", "yes"),
        log_level=env.get("LOG_LEVEL", "info").lower(),
        session_cache_seconds=float(env.get("SESSION_CACHE_SECONDS", "30")),
        admin_api_key=_secret("ADMIN_API_KEY"),
        cron_secret=_secret("CRON_SECRET"),
        vapi_api_key=_secret("VAPI_API_KEY"),
        vapi_webhook_secret=_secret("VAPI_WEBHOOK_SECRET"),
        vapi_base_url=(env.get("VAPI_BASE_URL") or "https://api.vapi.ai").rstrip("/"),
        twilio_auth_token=_secret("TWILIO_AUTH_TOKEN"),
        twilio_base_url=(env.get("TWILIO_BASE_URL") or "").rstrip("/") or None,
        stripe_secret_key=_secret("STRIPE_SECRET_KEY"),
        stripe_webhook_secret=_secret("STRIPE_WEBHOOK_SECRET"),
        stripe_base_url=(env.get("STRIPE_BASE_URL") or "").rstrip("/") or None,
        calcom_base_url=(env.get("CALCOM_BASE_URL") or "https://api.cal.com/v2").rstrip("/"),
        smtp_url=_secret("SMTP_URL"),
        mail_from=env.get("MAIL_FROM") or "AI Receptionist <no-reply@localhost>",
        twilio_account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
        twilio_api_key_sid=env.get("TWILIO_API_KEY_SID") or None,
        twilio_api_key_secret=_secret("TWILIO_API_KEY_SECRET"),
        twilio_twiml_app_sid=env.get("TWILIO_TWIML_APP_SID") or None,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
