"""Entry point of the orchestrator container: ``router-mesh orchestrator``."""

from __future__ import annotations

import logging

import uvicorn

from routermesh.runtime.app import create_app
from routermesh.runtime.config import CONFIG_DIR, MODELS_DIR, ORCHESTRATOR_PORT
from routermesh.runtime.logs import configure_logging
from routermesh.runtime.router import POLL_SECONDS, Router


def serve(
    config_dir: str = CONFIG_DIR,
    *,
    models_dir: str = MODELS_DIR,
    host: str = "0.0.0.0",  # noqa: S104 - a pod's port; the Service decides who reaches it
    port: int = ORCHESTRATOR_PORT,
    log_level: str = "info",
    poll_seconds: float = POLL_SECONDS,
) -> None:
    configure_logging(log_level)
    logging.getLogger("routermesh.router").info(
        "orchestrator starting",
        extra={"event": "starting", "config_dir": config_dir, "port": port},
    )
    app = create_app(Router(config_dir, models_dir=models_dir, poll_seconds=poll_seconds))
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,  # keep the JSON handlers configured above
        access_log=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
