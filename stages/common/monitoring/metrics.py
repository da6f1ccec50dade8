"""The service's numbers in Prometheus' text format (GET /metrics), through prometheus-client.

Every metric of a model carries its A/B ``variant``; routes are labelled by their template and
anything else as "other", so that a client probing random paths cannot grow the label set.
Drift is read from the monitors when Prometheus scrapes, not kept twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stages.common.monitoring.drift import DriftMonitor

PREFIX = "cifar10"
# the format generate_latest writes (the library's CONTENT_TYPE_LATEST names a newer one)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class DriftCollector(Collector):
    """Each variant's latest drift test, read at scrape time."""

    def __init__(self, monitors: Mapping[str, DriftMonitor]) -> None:
        self.monitors = monitors

    def collect(self) -> Iterator[Metric]:
        p_value = GaugeMetricFamily(
            f"{PREFIX}_drift_p_value",
            "p-value of the latest test of the window against the release's reference",
            labels=["variant", "feature"],
        )
        statistic = GaugeMetricFamily(
            f"{PREFIX}_drift_statistic",
            "statistic of the latest test (Kolmogorov-Smirnov D, or chi-square)",
            labels=["variant", "feature"],
        )
        detected = GaugeMetricFamily(
            f"{PREFIX}_drift_detected",
            "1 when the latest test found drift in any feature, else 0 (0 while collecting)",
            labels=["variant"],
        )
        window = GaugeMetricFamily(
            f"{PREFIX}_drift_window_images", "images in the drift window", labels=["variant"]
        )
        alarms = CounterMetricFamily(
            f"{PREFIX}_drift_alarms", "tests of the window that found drift", labels=["variant"]
        )
        for variant, monitor in self.monitors.items():
            for feature, result in monitor.results.items():
                p_value.add_metric([variant, feature], result["p_value"])
                statistic.add_metric([variant, feature], result["statistic"])
            detected.add_metric([variant], float(monitor.drifted))
            window.add_metric([variant], len(monitor.rows))
            alarms.add_metric([variant], monitor.alarms)
        yield from (p_value, statistic, detected, window, alarms)


class ServiceMetrics:
    """The service's metrics in a registry of its own (one per application)."""

    def __init__(self, routes: set[str], monitors: Mapping[str, DriftMonitor]) -> None:
        self.routes = routes
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "time from a request's start to its answer's end",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.predict_latency = Histogram(
            f"{PREFIX}_predict_duration_seconds",
            "a prediction request's decoding and inference, by A/B variant",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_images = Histogram(
            f"{PREFIX}_batch_images",
            "images per forward pass of the model",
            ["variant"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_images_in_flight",
            "images waiting for the model or in it",
            ["variant"],
            registry=registry,
        )
        self.predicted = Counter(
            f"{PREFIX}_predictions",
            "images answered, by top-1 class",
            ["variant", "class"],
            registry=registry,
        )
        self.confidence = Histogram(
            f"{PREFIX}_prediction_confidence",
            "top-1 probability of each image answered",
            ["variant"],
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.feedback = Counter(
            f"{PREFIX}_feedback",
            "true labels sent back, by whether the prediction was right",
            ["variant", "correct"],
            registry=registry,
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "the model each variant serves (value 1)",
            ["variant", "model", "architecture", "runtime", "version"],
            registry=registry,
        )
        registry.register(DriftCollector(monitors))

    def route(self, path: str) -> str:
        return path if path in self.routes else "other"

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
