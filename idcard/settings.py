"""The service's settings: one pydantic-settings class read from ``IDCARD_*`` and ``.env``.

``get_settings()`` is cached; tests change the environment and call
``get_settings.cache_clear()``.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger(__name__)

# Only ``serve --embedded`` (a laptop, a SQLite file) may run without a real key.
EMBEDDED_DEV_SECRET_KEY = "idcard-embedded-dev-key-not-for-production"
MIN_SECRET_KEY_LENGTH = 16


@lru_cache(maxsize=1)
def _warn_dev_key() -> None:  # once per process, not on every encryption
    log.warning("IDCARD_SECRET_KEY is not set: embedded mode uses a fixed dev key")


class MissingSecretKeyError(RuntimeError):
    """IDCARD_SECRET_KEY is absent or too weak; the message says what to do."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IDCARD_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = "sqlite:///./idcard.sqlite3"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Comma-separated: the first key encrypts, every key decrypts (rotation).
    secret_key: SecretStr | None = None
    # Set by ``idcard-ocr serve --embedded``; the only mode with a dev default key.
    embedded: bool = False

    sync_timeout_seconds: float = 30.0
    result_retention_hours: float = 168.0
    job_deadline_seconds: float = 600.0

    batch_max_items: int = 1000

    # Requests per minute per project (a project's own rate_limit_per_minute wins);
    # 0 means unlimited.
    rate_limit_per_minute: int = Field(600, ge=0)

    # After ``projects rotate``, the replaced token, AK/SK or webhook secret stays valid
    # this long (``--grace`` overrides it per rotation), so clients switch without
    # downtime.
    credential_grace_seconds: float = Field(86400.0, ge=0)
    # Refuse an SDK-HMAC-SHA256 signature seen before within its X-Sdk-Date window.
    sdk_replay_protection: bool = True

    # Request bodies over these are refused before they are parsed: the sync and job
    # routes carry one image (10 MB of base64 plus the JSON around it), a batch many.
    api_max_body_bytes: int = 14 * 1024 * 1024
    batch_max_body_bytes: int = 64 * 1024 * 1024

    webhook_max_attempts: int = 8
    webhook_backoff_base_seconds: float = 2.0
    webhook_timeout_seconds: float = 5.0

    url_max_bytes: int = 10 * 1024 * 1024
    url_connect_timeout: float = 3.0
    url_read_timeout: float = 10.0
    url_total_timeout: float = 20.0
    # NoDecode: the variable is a plain comma list, not JSON.
    url_allow_hosts: Annotated[list[str], NoDecode] = []

    # Alert thresholds overriding the documented defaults (worker.recognition.alerts):
    # IDCARD_ALERT_THRESHOLDS="blur=60,glare=45" or JSON '{"blur": 60}'; 0..100
    # (100 never raises the alert).
    alert_thresholds: Annotated[dict[str, int], NoDecode] = {}

    @field_validator("alert_thresholds", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("alert thresholds must be 'name=value,...' or a JSON object")
            return {k.strip(): v.strip() for k, v in pairs}
        return value

    @field_validator("alert_thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, int]) -> dict[str, int]:
        from idcard.options import ALERTS

        unknown = sorted(set(value) - set(ALERTS))
        if unknown:
            raise ValueError(f"unknown alert(s) {unknown}; choose from {', '.join(ALERTS)}")
        bad = sorted(k for k, v in value.items() if not 0 <= v <= 100)
        if bad:
            raise ValueError(f"alert thresholds must be 0..100: {bad}")
        return value

    @field_validator("url_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """The SECRET_KEY entries, current first. Raises ``MissingSecretKeyError``."""
        raw = self.secret_key.get_secret_value() if self.secret_key else ""
        keys = tuple(k.strip() for k in raw.split(",") if k.strip())
        if not keys:
            if self.embedded:
                _warn_dev_key()
                return (EMBEDDED_DEV_SECRET_KEY,)
            raise MissingSecretKeyError(
                "IDCARD_SECRET_KEY is not set: it encrypts personal data at rest and is "
                "required by the service (only `serve --embedded` has a dev default). "
                "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        short = [i for i, k in enumerate(keys) if len(k) < MIN_SECRET_KEY_LENGTH]
        if short:
            raise MissingSecretKeyError(
                f"IDCARD_SECRET_KEY entry #{short[0] + 1} is shorter than "
                f"{MIN_SECRET_KEY_LENGTH} characters"
            )
        return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
