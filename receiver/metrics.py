"""Prometheus metrics, one registry per app (no process-wide globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _QueueDepth(Collector):
    """Read the download queue's depth from the store when scraped, not on every change."""

    def __init__(self, depth: Callable[[], int]) -> None:
        self._depth = depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "receiver_download_queue_depth", "Output files queued or downloading", self._depth()
        )


class Metrics:
    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "receiver_deliveries",
            "Webhook deliveries by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.verification_failures = Counter(
            "receiver_verification_failures",
            "Refused signatures by reason",
            ["reason"],
            registry=self.registry,
        )
        self.token_checks = Counter(
            "receiver_token_checks",
            "Read token checks by where (api, console) and outcome (ok, wrong, limited: held"
            " off after too many wrong)",
            ["where", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "receiver_webhook_seconds",
            "Time to answer a webhook delivery",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.registry.register(_QueueDepth(queue_depth))
