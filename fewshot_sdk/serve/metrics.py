"""Request counts and latency percentiles, in Prometheus' text format at ``GET /metrics``.

Requests are labelled by route *template* (``/tasks/{task_id}/predict``), never by the path a client
sent, so that ids and junk paths cannot grow the label set without end; latency percentiles are
taken over each route's most recent requests. The figures are this process's: with several
workers or replicas, a scraper sums the counts of each.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency percentiles are taken over each route's last this many requests.
WINDOW = 4096
QUANTILES = (0.5, 0.9, 0.99)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, int]] = Counter()
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._sums: Counter[tuple[str, str]] = Counter()
        self._totals: Counter[tuple[str, str]] = Counter()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._counts[route, method, status] += 1
            self._recent.setdefault((route, method), deque(maxlen=WINDOW)).append(seconds)
            self._sums[route, method] += seconds
            self._totals[route, method] += 1

    def render(self) -> str:
        with self._lock:
            counts = sorted(self._counts.items())
            recent = {key: sorted(values) for key, values in self._recent.items()}
            sums, totals = dict(self._sums), dict(self._totals)
        lines = [
            "# HELP fewshot_http_requests_total Requests answered, by route template, method and status.",
            "# TYPE fewshot_http_requests_total counter",
        ]
        for (route, method, status), count in counts:
            lines.append(f"fewshot_http_requests_total{_labels(route=route, method=method, status=status)} {count}")
        lines += [
            f"# HELP fewshot_http_request_duration_seconds Latency, percentiles over each route's last {WINDOW} "
            "requests.",
            "# TYPE fewshot_http_request_duration_seconds summary",
        ]
        for (route, method), values in sorted(recent.items()):
            for q in QUANTILES:
                labels = _labels(route=route, method=method, quantile=q)
                lines.append(f"fewshot_http_request_duration_seconds{labels} {percentile(values, q):.6f}")
            labels = _labels(route=route, method=method)
            lines.append(f"fewshot_http_request_duration_seconds_sum{labels} {sums[route, method]:.6f}")
            lines.append(f"fewshot_http_request_duration_seconds_count{labels} {totals[route, method]}")
        return "\n".join(lines) + "\n"


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def _labels(**labels: object) -> str:
    def escape(value: object) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{name}="{escape(value)}"' for name, value in labels.items()) + "}"


class MetricsMiddleware:
    """ASGI middleware: times each HTTP request to its last byte and records it under its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(route, scope.get("method", ""), status, time.perf_counter() - start)
