"""The application factory: ``create_app(settings, dispatcher)``.

``uvicorn --factory api.app:create_app`` serves the service with a Celery dispatcher;
``idcard-ocr serve --embedded`` passes an in-process one instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from anyio import CapacityLimiter
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.auth import TOKEN_HEADER
from api.dispatch import CeleryDispatcher, Dispatcher
from api.errors import install_error_handlers
from api.metrics import ApiMetrics, MetricsMiddleware
from api.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from api.routes import batches, health, jobs, ocr
from api.schemas import DOC_MODELS
from idcard.settings import Settings, get_settings

# Threads that may block at once waiting for synchronous recognitions, apart from the
# thread pool every other request runs on.
SYNC_WAIT_THREADS = 256

DESCRIPTION = """Chinese resident ID card OCR, wire-compatible with the vendor's
`POST /v2/{project_id}/ocr/id-card`, plus asynchronous jobs, batches and webhooks.
Every error is `{"error_code", "error_msg"}`. Authenticate with `X-Auth-Token` or with
the vendor SDKs' AK/SK signature (`Authorization: SDK-HMAC-SHA256 Access=...,
SignedHeaders=..., Signature=...` and `X-Sdk-Date`)."""


def _version() -> str:
    try:
        return version("idcard-ocr")
    except PackageNotFoundError:
        return "0"


def _install_openapi(app: FastAPI) -> None:
    # Request bodies are parsed by hand (vendor semantics), so their models are added to
    # the components here for the routes' ``$ref``s to resolve.
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "XAuthToken": {"type": "apiKey", "in": "header", "name": TOKEN_HEADER},
                "SdkHmacSha256": {
                    "type": "apiKey", "in": "header", "name": "Authorization",
                    "description": "The vendor SDKs' AK/SK request signature "
                                   "(SDK-HMAC-SHA256, with X-Sdk-Date within 15 minutes)"},
            }
            components = schema["components"].setdefault("schemas", {})
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    # FastAPI documents a 422 per parameter; this API answers 400 AIS.0101.
                    operation.get("responses", {}).pop("422", None)
                    if path.startswith("/v2/"):
                        operation["security"] = [{"XAuthToken": []}, {"SdkHmacSha256": []}]
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            for model in DOC_MODELS:
                model_schema = model.model_json_schema(
                    ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def default_rate_limiter(settings: Settings) -> RateLimiter:
    """Redis-backed for the service; in-process for ``serve --embedded`` (no Redis)."""
    if settings.embedded:
        return MemoryRateLimiter()
    return RedisRateLimiter(settings.redis_url)


def create_app(settings: Settings | None = None,
               dispatcher: Dispatcher | None = None,
               rate_limiter: RateLimiter | None = None) -> FastAPI:
    """The API. Without a ``dispatcher``, jobs go to Celery at IDCARD_REDIS_URL and the
    app closes that dispatcher on shutdown; a dispatcher passed in is the caller's. The
    same goes for ``rate_limiter`` (default: ``default_rate_limiter``)."""
    settings = settings or get_settings()
    owned = dispatcher is None
    if dispatcher is None:
        dispatcher = CeleryDispatcher(settings.redis_url, settings.redis_url,
                                      settings.database_url)
    owned_limiter = rate_limiter is None
    limiter = rate_limiter or default_rate_limiter(settings)
    metrics = ApiMetrics(dispatcher, settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            dispatcher.close()
        if owned_limiter:
            limiter.close()

    # No Swagger UI: it loads its scripts from a CDN, which a self-hosted deployment
    # should not reach; /openapi.json is the documentation.
    app = FastAPI(title="idcard-ocr", version=_version(), description=DESCRIPTION,
                  lifespan=lifespan, openapi_url="/openapi.json", docs_url=None,
                  redoc_url=None)
    app.state.settings = settings
    app.state.dispatcher = dispatcher
    app.state.metrics = metrics
    app.state.wait_limiter = CapacityLimiter(SYNC_WAIT_THREADS)
    app.state.rate_limiter = limiter
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for module in (ocr, jobs, batches, health):
        app.include_router(module.router)
    _install_openapi(app)
    return app
