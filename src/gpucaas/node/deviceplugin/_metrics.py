"""The device plugin's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class PluginMetrics:
    """Prometheus metrics of one device plugin, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "gpucaas_device_plugin_calls_total",
            "Device plugin RPCs (allocate, preferred, prestart) by result",
            ["rpc", "result"],
            registry=self.registry,
        )
        self.fabric_ops = Counter(
            "gpucaas_device_plugin_fabric_operations_total",
            "Partition activations and deactivations by result",
            ["op", "result"],
            registry=self.registry,
        )
        self.health_transitions = Counter(
            "gpucaas_device_plugin_health_transitions_total",
            "GPU health changes, by the state changed to",
            ["health"],
            registry=self.registry,
        )
        self.reports = Counter(
            "gpucaas_device_plugin_health_reports_total",
            "Reports of the unhealthy GPUs to the control plane (node annotation) by result",
            ["result"],
            registry=self.registry,
        )
        self.registrations = Counter(
            "gpucaas_device_plugin_registrations_total",
            "Registrations with the kubelet by result",
            ["result"],
            registry=self.registry,
        )
        self.healthy = Gauge(
            "gpucaas_device_plugin_devices_healthy",
            "GPUs announced Healthy to the kubelet",
            registry=self.registry,
        )
        self.latency = Histogram(
            "gpucaas_device_plugin_rpc_seconds",
            "Latency of Allocate and PreStartContainer",
            ["rpc"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return bytes(generate_latest(self.registry))
