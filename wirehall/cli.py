"""The `wirehall` command: `wirehall run APP` (uvicorn underneath) and `wirehall routes APP`."""

from __future__ import annotations

import copy
import importlib
import os
import sys
from typing import Any

import click

__all__ = ["load_app", "main"]


def load_app(path: str) -> Any:
    """Import `module:attribute` (the current directory is importable) and return the attribute."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise click.BadParameter(
            f"{path!r} is not of the form MODULE:ATTRIBUTE, e.g. examples.chat:app",
            param_hint="APP",
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise click.BadParameter(
                f"could not find module {module_name!r} (run from the project's folder?)",
                param_hint="APP",
            ) from exc
        raise click.ClickException(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise click.ClickException(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attribute!r}", param_hint="APP"
            ) from None
    if not callable(target):
        raise click.BadParameter(f"{path!r} is not an ASGI app (it is not callable)", param_hint="APP")
    return target


def _log_config(level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["wirehall"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    config["loggers"]["examples"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


@click.group()
@click.version_option(package_name="wirehall")
def main() -> None:
    """wirehall: an async-first ASGI framework."""


@main.command()
@click.argument("app")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to bind.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--reload", is_flag=True, help="Restart when code changes (development).")
@click.option(
    "--ws-max-size",
    default=16 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(1),
    help="Largest WebSocket message the server accepts (bytes); larger: close 1009.",
)
@click.option(
    "--ws-ping-interval",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between server pings (0: none).",
)
@click.option(
    "--ws-ping-timeout",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for a pong before dropping the peer.",
)
@click.option(
    "--ws",
    "ws_protocol",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "websockets", "websockets-sansio", "wsproto"]),
    help="uvicorn's WebSocket implementation (auto: websockets-sansio).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@click.option(
    "--proxy-headers/--no-proxy-headers",
    default=False,
    show_default=True,
    help="Trust X-Forwarded-* from the proxy.",
)
def run(
    app: str,
    host: str,
    port: int,
    workers: int,
    reload: bool,
    ws_max_size: int,
    ws_ping_interval: float,
    ws_ping_timeout: float,
    ws_protocol: str,
    log_level: str,
    access_log: bool,
    proxy_headers: bool,
) -> None:
    """Serve APP (MODULE:ATTRIBUTE) with uvicorn."""
    import uvicorn

    load_app(app)  # fail here, clearly, rather than inside a worker
    backplane = os.environ.get("WIREHALL_BACKPLANE", "").strip() or "memory://"
    if workers > 1 and backplane.startswith("memory:"):
        click.echo(
            f"warning: {workers} workers with WIREHALL_BACKPLANE={backplane!r} act as {workers} "
            "separate WebSocket servers; set WIREHALL_BACKPLANE=redis://HOST:PORT/DB to join them",
            err=True,
        )
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=workers if not reload else None,
        reload=reload,
        ws=ws_protocol,
        ws_max_size=ws_max_size,
        ws_ping_interval=ws_ping_interval or None,
        ws_ping_timeout=ws_ping_timeout or None,
        log_level=log_level,
        log_config=_log_config(log_level),
        access_log=access_log,
        proxy_headers=proxy_headers,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


@main.command()
@click.argument("app")
def routes(app: str) -> None:
    """Print the route table of APP (MODULE:ATTRIBUTE)."""
    target = load_app(app)
    router = getattr(target, "router", None)
    if router is None or not hasattr(router, "table"):
        raise click.ClickException(f"{app!r} is not a wirehall app (it has no route table)")
    rows = router.table()
    width_methods = max((len(r[0]) for r in rows), default=7)
    width_path = max((len(r[1]) for r in rows), default=4)
    click.echo(f"{'METHODS':<{width_methods}}  {'PATH':<{width_path}}  ENDPOINT")
    for methods, path, endpoint in rows:
        click.echo(f"{methods:<{width_methods}}  {path:<{width_path}}  {endpoint}")


if __name__ == "__main__":  # pragma: no cover
    main()
