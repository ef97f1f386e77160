"""The agent's own ``/metrics`` (Prometheus text format, ``prometheus-client``), off
unless ``metrics.port`` is set; bound to 127.0.0.1 by default (a node exporter or a local
Prometheus agent scrapes it; open it to the cell network with ``metrics.bind``).

Series: decisions by kind, deadline misses (the journal's lifetime counters), the
latency histogram of every stage (trigger → decision ``total``, capture, inference, …;
since the agent started), items per second, journal backlog, active faults, model and
state, SoC temperature. Read at each scrape from the agent's own state (``Stats``, the
journal): nothing is counted twice and the loop does no extra work per item.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)
KINDS = ("ok", "reject", "review")


class AgentCollector:
    """A prometheus-client collector over one agent."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        agent = self.agent
        try:
            counts = agent.journal.counts()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the disk does
            counts = {}
        info = GaugeMetricFamily("edge_agent_info", "Model and state of the agent (value 1)",
                                 labels=["device", "model_version", "state"])
        info.add_metric([agent.config.device_id, str(getattr(agent.classifier, "version", "")
                                                     or ""), str(agent.state)], 1.0)
        yield info
        dec = CounterMetricFamily("edge_agent_decisions", "Decisions journaled, by kind "
                                  "(lifetime)", labels=["decision"])
        for kind in KINDS:
            if kind in counts:
                dec.add_metric([kind], float(counts[kind]))
        yield dec
        if "deadline_misses" in counts:
            yield CounterMetricFamily("edge_agent_deadline_misses", "Decisions that missed "
                                      "the reject deadline (lifetime)",
                                      value=float(counts["deadline_misses"]))
        if "unsent" in counts:
            yield GaugeMetricFamily("edge_agent_journal_backlog", "Decisions not yet synced",
                                    value=float(counts["unsent"]))
        yield GaugeMetricFamily("edge_agent_items_per_second", "Items per second, last 10 s",
                                value=float(agent.stats.fps()))
        faults = GaugeMetricFamily("edge_agent_fault", "Active faults (value 1)",
                                   labels=["fault"])
        for name in sorted(dict(agent.faults)):
            faults.add_metric([str(name)], 1.0)
        yield faults
        if agent.budget.budget_ms is not None:
            yield GaugeMetricFamily("edge_agent_latency_budget_seconds", "The bundle's "
                                    "inference latency budget (p95)",
                                    value=agent.budget.budget_ms / 1000.0)
        lat = HistogramMetricFamily("edge_agent_latency_seconds", "Latency per stage since "
                                    "the agent started (total: trigger → decision)",
                                    labels=["stage"])
        for stage, hist in agent.stats.hist.items():
            if hist.count:
                h = hist.cumulative()
                buckets = [(f"{b / 1000.0:g}", float(c)) for b, c in zip(h["le"], h["counts"],
                                                                         strict=True)]
                lat.add_metric([stage], buckets + [("+Inf", float(h["count"]))],
                               sum_value=h["sum"] / 1000.0)
        yield lat
        from edge_agent import machine

        temp = machine.temperature_c()
        if temp is not None:
            yield GaugeMetricFamily("edge_agent_temperature_celsius", "SoC temperature",
                                    value=float(temp))


class MetricsServer:
    """A worker (``Agent.add_worker``) serving ``/metrics`` on ``bind:port``. A port that
    cannot be bound or a missing library is a fault (status, heartbeat, log), never a
    stop: the line runs without its metrics."""

    def __init__(self, agent: Any, port: int, bind: str) -> None:
        self.agent, self.port, self.bind = agent, port, bind
        self._server: Any = None
        self.url: str | None = None

    def start(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            self.agent._fault("metrics", "metrics.port is set but prometheus-client is not "
                                         "installed: pip install prometheus-client")
            return
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(self.agent))
        try:
            self._server, _ = start_http_server(self.port, addr=self.bind, registry=registry)
        except OSError as err:
            self.agent._fault("metrics", f"cannot serve /metrics on {self.bind}:{self.port}: "
                                         f"{err}")
            return
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/metrics"
        self.agent._clear_fault("metrics")
        log.info("metrics on %s", self.url)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def attach(agent: Any) -> MetricsServer | None:
    """Add the metrics server to ``agent`` when its config sets ``metrics.port``."""
    m = agent.config.metrics
    if m.port is None:
        return None
    server = MetricsServer(agent, m.port, m.bind)
    agent.add_worker(server)
    return server
