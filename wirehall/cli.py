"""The `wirehall` command: `wirehall run APP` (uvicorn underneath) and `wirehall routes APP`."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from typing import Any, Literal

import click

from wirehall.app import DEFAULT_WEBSOCKET_MESSAGE_SIZE, Wirehall
from wirehall.errors import ConfigurationError
from wirehall.metrics import METRICS_ENV, MULTIPROC_DIR_ENV, metrics_path_from_env
from wirehall.security.hosts import (
    ALLOWED_HOSTS_ENV,
    LOOPBACK_HOSTS,
    HostAllowlist,
    allowed_hosts_from_env,
    is_loopback_address,
)
from wirehall.server.logs import LOG_FORMATS, LogFormat, log_config
from wirehall.server.protocols import (
    DEFAULT_HEAD_TIMEOUT,
    DEFAULT_MAX_HEAD_SIZE,
    HEAD_TIMEOUT_ENV,
    MAX_HEAD_SIZE_ENV,
    HeadLimits,
    check_uvicorn,
    http_protocol,
)
from wirehall.server.redaction import DEFAULT_REDACTED_PARAMS
from wirehall.server.websocket import PROTOCOL_PATH, check_versions

__all__ = ["load_app", "main", "server_allowed_hosts", "websocket_max_size"]


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


def websocket_max_size(app: Any) -> int:
    """The largest WebSocket message uvicorn should accept for `app`: what its routes take, else 1 MiB."""
    if isinstance(app, Wirehall):
        return app.max_websocket_message_size
    return DEFAULT_WEBSOCKET_MESSAGE_SIZE


def server_allowed_hosts(bind: str, given: Iterable[str], environ: dict[str, str]) -> tuple[str, ...] | None:
    """The `Host` names to serve: `--allowed-host`, else WIREHALL_ALLOWED_HOSTS, else loopback names
    when `bind` is a loopback address; None (any) otherwise.

    Raises:
        ConfigurationError: an entry is not a host name.
    """
    chosen = tuple(given)
    if chosen:
        HostAllowlist(chosen)
        return chosen
    from_env = allowed_hosts_from_env(environ)
    if from_env is not None:
        return from_env
    return LOOPBACK_HOSTS if is_loopback_address(bind) else None


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
    default=None,
    type=click.IntRange(1),
    help="Largest WebSocket message the server accepts (bytes); larger: close 1009, refused "
    "before it is inflated. [default: the largest max_message_size of the app's WebSocket "
    "routes, else 1 MiB]",
)
@click.option(
    "--ws-ping-interval",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between server pings (0: none). With the timeout, bounds how long a peer that "
    "stopped reading (and is owed too little to back up its output) keeps its connection.",
)
@click.option(
    "--ws-ping-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for a pong before dropping the peer.",
)
@click.option(
    "--ws",
    "ws_protocol",
    default="wirehall",
    show_default=True,
    type=click.Choice(["wirehall", "websockets-sansio", "websockets", "wsproto", "auto", PROTOCOL_PATH]),
    help="The WebSocket implementation: wirehall's own (frames written once per broadcast, no "
    "task per idle connection) or one of uvicorn's. wsproto inflates compressed messages "
    "before checking their size, so with it compression (permessage-deflate) is turned off.",
)
@click.option(
    "--http",
    "http_protocol_name",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "httptools", "h11"]),
    help="uvicorn's HTTP implementation (auto: httptools); both get the head limits below.",
)
@click.option(
    "--max-head-size",
    default=DEFAULT_MAX_HEAD_SIZE,
    show_default=True,
    envvar=MAX_HEAD_SIZE_ENV,
    type=click.IntRange(1024),
    help=f"Largest request line + headers (bytes); larger: 431, then close. Env {MAX_HEAD_SIZE_ENV}.",
)
@click.option(
    "--head-timeout",
    default=DEFAULT_HEAD_TIMEOUT,
    show_default=True,
    envvar=HEAD_TIMEOUT_ENV,
    type=click.FloatRange(0, min_open=True),
    help="Seconds to receive a whole request head, from connection open or the end of the "
    f"previous response; then 408 (or a plain close if nothing came). Env {HEAD_TIMEOUT_ENV}.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Host name to serve (repeat; '*.example.com', '*' for any); other Host values get 400. "
    f"[default: env {ALLOWED_HOSTS_ENV}, else localhost, 127.0.0.1 and [::1] when --host is a "
    "loopback address, else any, unless the app sets allowed_hosts]",
)
@click.option(
    "--redact-param",
    "redacted_params",
    multiple=True,
    metavar="NAME",
    help="Query parameter whose value logs show as REDACTED (repeat), besides "
    f"{', '.join(DEFAULT_REDACTED_PARAMS)} (also as words of longer names: api_key); "
    "Cookie, Authorization and headers named like these are redacted too.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    help="Level of every logger: the app's own (logging.getLogger(...)), wirehall's and uvicorn's.",
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(LOG_FORMATS),
    help="text: uvicorn's lines, with the logger's name on the app's. json: one JSON object a "
    "line (time, level, logger, message; request_id, method, route, connection_id where known; "
    "client, path, status on access lines; exception).",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="One line per HTTP request (logger uvicorn.access, on stdout). WebSocket handshakes "
    "are logged by uvicorn.error at info either way. Query credentials are redacted.",
)
@click.option(
    "--metrics",
    is_flag=True,
    help=f"Serve Prometheus metrics at /metrics (a path in env {METRICS_ENV} moves them); "
    "needs wirehall[metrics]. Under --workers every worker's are summed.",
)
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
    ws_max_size: int | None,
    ws_ping_interval: float,
    ws_ping_timeout: float,
    ws_protocol: str,
    http_protocol_name: Literal["auto", "httptools", "h11"],
    max_head_size: int,
    head_timeout: float,
    allowed_hosts: tuple[str, ...],
    redacted_params: tuple[str, ...],
    log_level: str,
    log_format: LogFormat,
    access_log: bool,
    metrics: bool,
    proxy_headers: bool,
) -> None:
    """Serve APP (MODULE:ATTRIBUTE) with uvicorn."""
    import uvicorn

    try:
        check_uvicorn()
        limits = HeadLimits(max_head_size, head_timeout)
        hosts = server_allowed_hosts(host, allowed_hosts, dict(os.environ))
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    target = load_app(app)  # fail here, clearly, rather than inside a worker
    if isinstance(target, Wirehall) and target.allowed_hosts is not None:
        if allowed_hosts:
            click.echo(f"warning: {app} sets allowed_hosts itself; --allowed-host is ignored", err=True)
    elif hosts is not None and set(hosts) == set(LOOPBACK_HOSTS):
        click.echo(
            f"serving Host {', '.join(hosts)} only (loopback address); --allowed-host NAME for another name",
            err=True,
        )
    # read at startup by the app and by the protocols, in this process, its workers and its reloader
    os.environ.update(limits.to_env())
    if hosts is not None:
        os.environ[ALLOWED_HOSTS_ENV] = ",".join(hosts)
    if ws_max_size is None:
        ws_max_size = websocket_max_size(target)
    if ws_protocol in ("wirehall", PROTOCOL_PATH):
        try:
            check_versions()  # fail now, clearly, rather than misbehave on the first connection
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from exc
        ws_protocol = PROTOCOL_PATH
    backplane = os.environ.get("WIREHALL_BACKPLANE", "").strip() or "memory://"
    if workers > 1 and backplane.startswith("memory:"):
        click.echo(
            f"warning: {workers} workers with WIREHALL_BACKPLANE={backplane!r} act as {workers} "
            "separate WebSocket servers; set WIREHALL_BACKPLANE=redis://HOST:PORT/DB to join them",
            err=True,
        )
    metrics_dir = _prepare_metrics(metrics, target, workers if not reload else 1)
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            workers=workers if not reload else None,
            reload=reload,
            http=http_protocol(http_protocol_name),
            h11_max_incomplete_event_size=max_head_size,
            ws=ws_protocol,
            ws_max_size=ws_max_size,
            # wsproto inflates a whole read before its size check: no compression with it
            ws_per_message_deflate=ws_protocol != "wsproto",
            ws_ping_interval=ws_ping_interval or None,
            ws_ping_timeout=ws_ping_timeout or None,
            log_level=log_level,
            log_config=log_config(log_level, log_format, [*DEFAULT_REDACTED_PARAMS, *redacted_params]),
            access_log=access_log,
            proxy_headers=proxy_headers,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _prepare_metrics(flag: bool, target: Any, workers: int) -> str | None:
    """Turn metrics on for the workers (`--metrics`); with several, a shared directory for their
    numbers (returned: remove it once the server stopped). None when there is nothing to remove."""
    try:
        from_env = metrics_path_from_env()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    if flag and from_env is None:
        os.environ[METRICS_ENV] = "1"  # read by the app at startup, in every worker
    if not (flag or from_env is not None or (isinstance(target, Wirehall) and target.metrics is not None)):
        return None
    if flag or from_env is not None:
        try:
            import prometheus_client  # noqa: F401  # fail here, clearly, rather than in each worker
        except ImportError as exc:
            raise click.ClickException(
                "--metrics needs the prometheus-client package: pip install 'wirehall[metrics]'"
            ) from exc
    if workers < 2 or os.environ.get(MULTIPROC_DIR_ENV):
        return None
    directory = tempfile.mkdtemp(prefix="wirehall-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = directory  # before the workers start: they import prometheus_client
    return directory


@main.command()
@click.argument("app")
def routes(app: str) -> None:
    """Print the route table of APP (MODULE:ATTRIBUTE)."""
    target = load_app(app)
    router = getattr(target, "router", None)
    if router is None or not hasattr(router, "table"):
        raise click.ClickException(f"{app!r} is not a wirehall app (it has no route table)")
    if isinstance(target, Wirehall):
        target.add_document_routes()  # what startup adds: /openapi.json, /docs...
    # a route's name (for url_path_for, and the operationId of the OpenAPI document)
    names = (
        {(r.path, r.method == "WEBSOCKET"): r.name for r in router.routes()}
        if hasattr(router, "routes")
        else {}
    )
    rows = [
        (methods, path, names.get((path, methods == "WEBSOCKET")) or "-", endpoint)
        for methods, path, endpoint in router.table()
    ]
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(3)]
    widths = [
        max(width, len(title)) for width, title in zip(widths, ("METHODS", "PATH", "NAME"), strict=True)
    ]
    click.echo(f"{'METHODS':<{widths[0]}}  {'PATH':<{widths[1]}}  {'NAME':<{widths[2]}}  ENDPOINT")
    for methods, path, name, endpoint in rows:
        click.echo(f"{methods:<{widths[0]}}  {path:<{widths[1]}}  {name:<{widths[2]}}  {endpoint}")


if __name__ == "__main__":  # pragma: no cover
    main()
