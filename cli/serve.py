"""`refinevad serve`: run the HTTP service (uvicorn) with settings from the environment and an optional YAML file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP service",
        description=(
            "Run the RefineVAD service. Settings come from REFINEVAD_* environment variables over an optional "
            "YAML file (--config or REFINEVAD_CONFIG) over built-in defaults: the shipped model, ./data for the "
            "database and uploads, CPU or GPU as available."
        ),
    )
    parser.add_argument("--host", help="interface to listen on (default REFINEVAD_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default REFINEVAD_PORT or 8000)")
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help=(
            "join this Ray cluster (HOST:PORT of `ray start --head`) and run live streams and "
            "file jobs on its machines; needs REFINEVAD_DATABASE_URL (default REFINEVAD_CLUSTER_ADDRESS)"
        ),
    )
    parser.add_argument("--config", type=Path, help="YAML settings file (keys: setting names, no prefix)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import functools

    import uvicorn

    from service.app import create_app
    from service.http_protocol import HeadTimeoutProtocol
    from service.settings import load_settings
    from service.storage import StorageError

    overrides = {key: value for key in ("host", "port") if (value := getattr(args, key)) is not None}
    if args.cluster:
        overrides["cluster_address"] = args.cluster
    try:
        settings = load_settings(args.config, **overrides)
    except ValueError as exc:
        logger.error("invalid configuration: %s", exc)
        return 2
    try:
        app = create_app(settings)
    except StorageError as exc:
        # A container orchestrator restarts the service until its database is up; say why it stopped.
        logger.error("cannot open the database: %s", exc)
        return 3
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        # Uploads can be large; the app enforces its own limit while streaming.
        timeout_keep_alive=30,
        # Connections that never finish sending a request head are closed (slow-loris).
        http=functools.partial(HeadTimeoutProtocol, head_timeout_s=settings.request_head_timeout_s),
    )
    return 0
