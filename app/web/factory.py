"""The FastAPI application factory: settings → database → routers → middleware."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError

import app.hooks  # job kinds, erasure hooks, history sources: registered before first use
import app.models  # noqa: F401  (all tables registered before first use)
from app.auth import admin_routes as auth_admin_routes
from app.auth import routes as auth_routes
from app.auth import service as auth_service
from app.cases import routes as case_routes
from app.cases.service import sweep_orphan_files
from app.cases.storage import PhotoStore
from app.cohorts import routes as cohort_routes
from app.compare import routes as compare_routes
from app.db import make_engine, make_sessionmaker
from app.demo import routes as demo_routes
from app.diagnoses import routes as diagnosis_routes
from app.evaluations import case_routes as evaluation_case_routes
from app.evaluations import routes as evaluation_routes
from app.explanations import routes as explanation_routes
from app.gaze import attention_routes
from app.gaze import routes as gaze_routes
from app.jobs.registry import WorkerContext
from app.jobs.runners import make_runner
from app.matching import routes as matching_routes
from app.phenotypes import routes as phenotype_routes
from app.predictions import routes as prediction_routes
from app.predictions.provider import ModelProvider
from app.ratings import pages as rating_pages
from app.ratings import routes as rating_routes
from app.settings import PROJECT_ROOT, Settings, get_settings
from app.vision.detect import FaceDetector
from app.web import health
from app.web.body_limit import BodyLimitMiddleware
from app.web.csrf import CsrfMiddleware
from app.web.errors import install_error_handlers
from app.web.headers import SecurityHeadersMiddleware
from app.web.input_guard import InputGuardMiddleware
from app.web.logging import install_access_log_filter

log = logging.getLogger("gestaltlens")

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/login", "/setup", "/status"})
"""Routes reachable without authentication (the contract's list; /static is mounted separately)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.resolved_database_url, pool_timeout=settings.database_pool_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            with app.state.sessions() as session:
                if auth_service.user_count(session) == 0:
                    auth_routes.ensure_setup_code_for_app(app)
                orphans = sweep_orphan_files(session, store=app.state.photo_store, grace_s=settings.orphan_grace_s)
                if orphans:
                    log.warning("removed %d upload folder(s) left without a case by a crash", len(orphans))
        except OperationalError:
            # Start anyway: /healthz answers, /readyz and every database route say 503 until it is back.
            log.error("the database is unreachable at start-up; serving 503 until it answers")
        if settings.preload_model:
            app.state.models.preload()
        app.state.jobs.start()
        try:
            yield
        finally:
            app.state.jobs.stop()
            engine.dispose()

    app = FastAPI(
        title="GestaltLens",
        version="0.1.0",
        summary="Syndrome ranking and explanation maps from facial photos. Research tool, not a diagnostic device.",
        lifespan=lifespan,
        # The generated docs would be public routes (and Swagger UI loads scripts from a CDN, which the CSP
        # forbids); the schema is served behind auth by app.web.health instead.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_sessionmaker(engine)
    app.state.photo_store = PhotoStore(settings.photo_dir)
    app.state.detector = FaceDetector()
    app.state.setup_code = None
    app.state.models = ModelProvider(settings.models_dir, settings.model)
    # The inline runner works in this process with the same sessions, store and model provider; its
    # explainer keeps a private copy of the network, so the served model never carries hooks.
    app.state.jobs = make_runner(settings, WorkerContext(settings=settings, sessions=app.state.sessions,
                                                         photo_store=app.state.photo_store, models=app.state.models))

    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(auth_routes.router)
    app.include_router(auth_admin_routes.router)
    app.include_router(case_routes.api)
    app.include_router(case_routes.pages)
    app.include_router(phenotype_routes.api)
    app.include_router(demo_routes.pages)
    app.include_router(phenotype_routes.pages)
    app.include_router(diagnosis_routes.api)
    app.include_router(diagnosis_routes.pages)
    app.include_router(prediction_routes.router)
    app.include_router(prediction_routes.gm_router)
    app.include_router(explanation_routes.api)
    app.include_router(explanation_routes.pages)
    app.include_router(compare_routes.api)
    app.include_router(compare_routes.pages)
    app.include_router(cohort_routes.api)
    app.include_router(cohort_routes.pages)
    app.include_router(rating_routes.api)
    app.include_router(rating_pages.pages)
    app.include_router(gaze_routes.api)
    app.include_router(gaze_routes.pages)
    app.include_router(attention_routes.api)
    app.include_router(attention_routes.pages)
    app.include_router(evaluation_routes.api)
    app.include_router(evaluation_routes.pages)
    app.include_router(evaluation_case_routes.api)
    app.include_router(evaluation_case_routes.pages)
    app.include_router(matching_routes.api)
    app.include_router(matching_routes.pages)
    app.mount("/static", StaticFiles(directory=PROJECT_ROOT / "static"), name="static")

    # Outermost last: security headers wrap everything, including CSRF refusals.
    app.add_middleware(CsrfMiddleware, secret=settings.resolved_secret_key, secure_cookies=settings.secure_cookies)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=case_routes.upload_body_limit(settings),
        # POST /predict, /encode, /crop carry the photo as base64 in JSON: 4/3 of the file, +2.7% for line
        # breaks every 76 characters (base64.encodebytes), plus a little framing.
        overrides={p: settings.max_upload_bytes * 138 // 100 + 64 * 1024 for p in ("/predict", "/encode", "/crop")},
    )
    app.add_middleware(InputGuardMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    install_access_log_filter()
    return app
