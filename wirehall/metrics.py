"""Prometheus metrics for an app: HTTP requests, WebSocket connections, rooms and delivery.

Off by default. `Wirehall(metrics=True)`, `app.enable_metrics(path="/metrics")`,
`wirehall run --metrics` or the env variable `WIREHALL_METRICS` turn them on; they need
the `prometheus-client` package (`pip install 'wirehall[metrics]'`). The names are listed
in docs/metrics.md.

Where each number comes from (nothing is added to a hot path that is off):

- HTTP requests and their latency: the app's router, which hands each request to
  `HttpMeter.serve` (or, when the app observes requests, `HttpMeter.record` from the same
  place that publishes `RequestCompleted`);
- WebSocket connections opened: `WebSocketConnected` events; closed (by close code) and
  slow-consumer evictions: the `WebSocketService` registry, when a connection leaves it,
  which on the native path is when the connection ends, not when its ASGI call returns;
- messages received: `WebSocketMessageReceived` events; messages sent and the fan-out
  time of each broadcast: the service's delivery (`ServiceMetrics`);
- backplane publish errors: the service; reconnects: the backplane's `on_reconnect`;
- open connections, rooms and outbox depths: read from the service when scraped (and,
  with several worker processes, every `sample_interval` seconds as well).

The per-request and per-broadcast numbers are kept in plain integers (`Tally`) and
folded into prometheus_client's metrics when scraped (and, with several workers, every
`sample_interval` seconds), because a prometheus_client histogram takes a lock per value
and walks its buckets in Python: about 2 us a request, where a hello-world request costs
the server about 30 us of CPU in all. The tally costs a bisect and three additions.

Under several worker processes (`wirehall run --workers N`) prometheus_client's
multi-process mode is used: `PROMETHEUS_MULTIPROC_DIR` names a directory the workers
share (`wirehall run` makes a temporary one), counters and histograms are summed over
every worker that ever ran, gauges over the live ones (the deepest outbox: the live max).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from wirehall.errors import ConfigurationError, MissingDependencyError
from wirehall.events import EventBus, WebSocketConnected, WebSocketMessageReceived
from wirehall.http.response import Response
from wirehall.types import Message, Receive, Scope, Send
from wirehall.websocket.service import WebSocketService

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "DEFAULT_PATH",
    "FANOUT_BUCKETS",
    "HTTP_BUCKETS",
    "METRICS_ENV",
    "MULTIPROC_DIR_ENV",
    "UNMATCHED_ROUTE",
    "HttpMeter",
    "Metrics",
    "Tally",
    "metrics_path_from_env",
]

logger = logging.getLogger(__name__)

DEFAULT_PATH = "/metrics"
METRICS_ENV = "WIREHALL_METRICS"
"""`1`/`true`/`on` (served at /metrics) or a path starting with `/`: turns metrics on at startup."""
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's multi-process mode: the directory the worker processes share."""
UNMATCHED_ROUTE = "<unmatched>"
"""The `route` label of requests no route template matched (404s, mounted apps)."""
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the HTTP latency histogram."""
FANOUT_BUCKETS = (0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
"""Upper bounds (seconds) of the broadcast fan-out histogram."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def metrics_path_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """Where `WIREHALL_METRICS` asks for the metrics to be served; None when it is unset or off.

    Raises:
        ConfigurationError: the value is neither a yes/no word nor a path.
    """
    value = (os.environ if environ is None else environ).get(METRICS_ENV, "").strip()
    if value.lower() in _FALSE:
        return None
    if value.lower() in _TRUE:
        return DEFAULT_PATH
    if value.startswith("/"):
        return value
    raise ConfigurationError(
        f"{METRICS_ENV}={value!r} is not understood; use 1 (served at {DEFAULT_PATH}), 0, or a path such as /metrics"
    )


class Tally:
    """Observations of one histogram series (and its counter) not yet folded into prometheus_client."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self, size: int) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * size  # per bound, not cumulative; the last one is +Inf

    def add(self, bounds: tuple[float, ...], value: float) -> None:
        """Count one observation of `value` (seconds)."""
        self.count += 1
        self.total += value
        self.buckets[bisect_left(bounds, value)] += 1

    def flush(self, histogram: Histogram, counter: Counter | None = None) -> None:
        """Add what was counted to `histogram` (a labelled child) and `counter`, and start again."""
        if not self.count:
            return
        if counter is not None:
            counter.inc(self.count)
        # prometheus_client has no public way to add n observations at once: its histogram
        # child keeps one value per bucket (`_buckets`, not cumulative) and `_sum`, in every
        # version so far; tests/test_metrics.py reads the buckets back
        values = histogram._buckets
        for index, count in enumerate(self.buckets):
            if count:
                values[index].inc(count)
        histogram._sum.inc(self.total)
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * len(self.buckets)


class HttpMeter:
    """Times and counts HTTP requests by route template, method and status (see the module)."""

    __slots__ = ("_duration", "_requests", "_tallies")

    def __init__(self, requests: Counter, duration: Histogram) -> None:
        self._requests = requests
        self._duration = duration
        self._tallies: dict[tuple[str | None, str, int], tuple[Tally, Counter, Histogram]] = {}

    def serve(
        self,
        handler: Callable[[Scope, Receive, Send], Awaitable[None]],
        route: str | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> Awaitable[None]:
        """Run `handler` for one request, timed and counted as `route` (a template; None: unmatched).

        Counted when the response's last body message is sent (no coroutine of its own
        around the handler: that would cost more than the counting). A handler that fails
        before answering is answered 500 by wirehall's error handling, which is counted.
        """
        started = perf_counter()
        status = 500
        tallies = self._tallies

        def watching(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not message.get("more_body", False):
                seconds = perf_counter() - started
                found = tallies.get((route, scope["method"], status))
                if found is None:
                    found = self._add(route, scope["method"], status)
                tally = found[0]  # Tally.add, inlined: this runs for every request
                tally.count += 1
                tally.total += seconds
                tally.buckets[bisect_left(HTTP_BUCKETS, seconds)] += 1
            return send(message)

        return handler(scope, receive, watching)

    def record(self, route: str | None, method: str, status: int, seconds: float) -> None:
        """Count one request answered with `status` after `seconds`."""
        found = self._tallies.get((route, method, status))
        if found is None:
            found = self._add(route, method, status)
        found[0].add(HTTP_BUCKETS, seconds)

    def _add(self, route: str | None, method: str, status: int) -> tuple[Tally, Counter, Histogram]:
        if method not in _METHODS:  # a client may send any word as a method: one series for all
            method = "other"
            found = self._tallies.get((route, method, status))
            if found is not None:
                return found
        label = route if route is not None else UNMATCHED_ROUTE
        found = (
            Tally(len(HTTP_BUCKETS) + 1),
            self._requests.labels(label, method, str(status)),
            self._duration.labels(label, method),
        )
        self._tallies[(route, method, status)] = found
        return found

    def flush(self) -> None:
        """Fold what was counted since the last flush into the prometheus_client metrics."""
        for tally, requests, duration in self._tallies.values():
            tally.flush(duration, requests)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise MissingDependencyError("prometheus-client", extra="metrics") from exc
    return prometheus_client


class Metrics:
    """An app's Prometheus metrics: its own registry, fed by its events and its WebSocket service.

    Built by `Wirehall.enable_metrics`; `observe` wires it to the app, `expose` answers a scrape.

    Args:
        multiprocess: use prometheus_client's multi-process mode (default: when
            `PROMETHEUS_MULTIPROC_DIR` is set, as `wirehall run --workers N --metrics` does).
        sample_interval: in multi-process mode, seconds between two readings of this
            process's gauges (connections, rooms, outbox depths) by a background task, so
            that a scrape answered by another worker sees them.
    """

    def __init__(self, *, multiprocess: bool | None = None, sample_interval: float = 1.0) -> None:
        prometheus = _prometheus()
        if multiprocess is None:
            multiprocess = bool(os.environ.get(MULTIPROC_DIR_ENV))
        if multiprocess and not os.environ.get(MULTIPROC_DIR_ENV):
            raise ConfigurationError(
                f"multi-process metrics need {MULTIPROC_DIR_ENV} set to a directory the workers share "
                "(wirehall run --metrics --workers N sets one up)"
            )
        if sample_interval <= 0:
            raise ConfigurationError(f"sample_interval={sample_interval!r}; use a positive number of seconds")
        self.multiprocess = multiprocess
        self.sample_interval = sample_interval
        self.content_type: str = prometheus.CONTENT_TYPE_LATEST
        self._prometheus = prometheus
        registry = self.registry = prometheus.CollectorRegistry(auto_describe=True)
        counter, gauge, histogram = prometheus.Counter, prometheus.Gauge, prometheus.Histogram
        self.http_requests: Counter = counter(
            "wirehall_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=registry,
        )
        self.http_duration: Histogram = histogram(
            "wirehall_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template and method.",
            ("route", "method"),
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.ws_open: Gauge = gauge(
            "wirehall_websocket_connections",
            "WebSocket connections served now (handshakes in progress included).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ws_opened: Counter = counter(
            "wirehall_websocket_connections_opened",
            "WebSocket handshakes accepted.",
            registry=registry,
        )
        self.ws_closed: Counter = counter(
            "wirehall_websocket_connections_closed",
            "Accepted WebSocket connections that ended, by close code.",
            ("code",),
            registry=registry,
        )
        self.rooms: Gauge = gauge(
            "wirehall_websocket_rooms",
            "Rooms with members on this process (summed over worker processes).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.messages_in: Counter = counter(
            "wirehall_websocket_messages_received",
            "WebSocket messages received by controllers (accepted or invalid).",
            registry=registry,
        )
        self.messages_out: Counter = counter(
            "wirehall_websocket_messages_sent",
            "Messages the WebSocket service handed to connections (one per recipient of a broadcast).",
            registry=registry,
        )
        self.outbox_messages: Gauge = gauge(
            "wirehall_websocket_outbox_messages",
            "Outgoing messages waiting for slow sockets, all connections together.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.outbox_max: Gauge = gauge(
            "wirehall_websocket_outbox_max_messages",
            "Outgoing messages waiting for the most backed-up connection.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.evictions: Counter = counter(
            "wirehall_websocket_slow_consumer_evictions",
            "Connections closed (1013) because their output did not keep up.",
            registry=registry,
        )
        self.fanout: Histogram = histogram(
            "wirehall_websocket_broadcast_fanout_seconds",
            "Time to hand one broadcast to this process's members.",
            buckets=FANOUT_BUCKETS,
            registry=registry,
        )
        self.publish_errors: Counter = counter(
            "wirehall_backplane_publish_errors",
            "Publishes the backplane did not take.",
            registry=registry,
        )
        self.reconnects: Counter = counter(
            "wirehall_backplane_reconnects",
            "Times this process got the backplane back after losing it.",
            registry=registry,
        )
        self.http = HttpMeter(self.http_requests, self.http_duration)
        self._closed: dict[int, Counter] = {}
        self._service: WebSocketService | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._fanout = Tally(len(FANOUT_BUCKETS) + 1)
        self._sent = 0
        self._received = 0
        self._watching_backplane = False

    # wiring -----------------------------------------------------------------------------

    def observe(self, events: EventBus, service: WebSocketService) -> None:
        """Count what `events` and `service` report (the app calls this once)."""
        events.subscribe(WebSocketConnected, self._connected)
        events.subscribe(WebSocketMessageReceived, self._message_received)
        service.metrics = self
        self._service = service

    async def start(self) -> None:
        """At app startup: count backplane reconnects; in multi-process mode, sample in the background."""
        service = self._service
        if service is not None and not self._watching_backplane:
            service.backplane.on_reconnect(self.reconnects.inc)
            self._watching_backplane = True  # an app started again keeps its one callback
        if self.multiprocess and self._sampler is None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_every())

    async def stop(self) -> None:
        """At app shutdown: stop sampling; in multi-process mode, drop this process's live gauges."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        self.flush()
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # untyped in prometheus_client

    # answering a scrape -----------------------------------------------------------------

    def flush(self) -> None:
        """Fold the per-request and per-broadcast tallies into the prometheus_client metrics."""
        self.http.flush()
        self._fanout.flush(self.fanout)
        sent, self._sent = self._sent, 0
        if sent:
            self.messages_out.inc(sent)
        received, self._received = self._received, 0
        if received:
            self.messages_in.inc(received)

    def sample(self) -> None:
        """Fold the tallies in and read this process's gauges from the WebSocket service now."""
        self.flush()
        service = self._service
        if service is None:
            return
        self.ws_open.set(service.connection_count)
        self.rooms.set(service.room_count)
        depths = service.queue_depths()
        self.outbox_messages.set(sum(depths))
        self.outbox_max.set(max(depths, default=0))

    def render(self) -> bytes:
        """The exposition text: this process's metrics, or every worker's in multi-process mode."""
        self.sample()
        prometheus = self._prometheus
        if not self.multiprocess:
            data: bytes = prometheus.generate_latest(self.registry)
            return data
        from prometheus_client import multiprocess

        registry: CollectorRegistry = prometheus.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        data = prometheus.generate_latest(registry)
        return data

    async def expose(self) -> Response:
        """The endpoint serving the metrics (`GET /metrics`)."""
        return Response(self.render(), media_type=self.content_type)

    async def _sample_every(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # the sampler must go on: a failed reading is logged
                logger.exception("sampling the WebSocket metrics failed")
            await asyncio.sleep(self.sample_interval)

    # what the events and the service report -----------------------------------------------

    def _connected(self, event: WebSocketConnected) -> None:
        self.ws_opened.inc()

    def _message_received(self, event: WebSocketMessageReceived) -> None:
        self._received += 1

    def connection_closed(self, code: int, *, evicted: bool) -> None:
        """An accepted connection left the service with `code` (a slow consumer when `evicted`)."""
        child = self._closed.get(code)
        if child is None:
            child = self._closed[code] = self.ws_closed.labels(str(code))
        child.inc()
        if evicted:
            self.evictions.inc()

    def fanned_out(self, recipients: int, seconds: float) -> None:
        """One broadcast reached `recipients` local connections in `seconds`."""
        self._fanout.add(FANOUT_BUCKETS, seconds)
        self._sent += recipients

    def sent(self, count: int) -> None:
        """`count` messages were handed to connections outside a broadcast."""
        self._sent += count

    def publish_failed(self) -> None:
        """The backplane did not take a publish."""
        self.publish_errors.inc()
