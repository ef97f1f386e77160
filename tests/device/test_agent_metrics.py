"""The agent's own /metrics: off by default; when configured, a real HTTP scrape of a
running agent parses as Prometheus text with its decisions, misses and latency
histograms; a port already taken is a fault in the status while the line keeps running."""

from __future__ import annotations

import time
import urllib.request

import yaml
from plckit import AgentThread, busy_port
from prometheus_client.parser import text_string_to_metric_families

from edge_agent import metrics
from edge_agent.config import load_config
from edge_agent.service import Agent


def agent_with(sim_config, **section):
    data = yaml.safe_load(sim_config.read_text())
    data["trigger"]["rate_hz"] = 200
    if section:
        data["metrics"] = section
    sim_config.write_text(yaml.safe_dump(data))
    return Agent(load_config(sim_config, env={}))


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_are_off_by_default(sim_config):
    agent = agent_with(sim_config)
    try:
        assert agent.config.metrics.port is None and metrics.attach(agent) is None
    finally:
        agent.close()


def test_scrape_a_running_agent(sim_config):
    agent = agent_with(sim_config, port=0)
    server = metrics.attach(agent)
    run = AgentThread(agent).start()
    try:
        # scraped until the counters show 50 decisions: how soon depends on the machine's
        # load (49 after 20 s, once, beside stress-ng), what the page says does not
        deadline = time.monotonic() + 300
        while True:
            if server.url is not None and agent.stats.items >= 50:
                with urllib.request.urlopen(server.url, timeout=10) as r:
                    text = r.read().decode()
                s = samples(text)
                got = {k: s.get(("edge_agent_decisions_total", (("decision", k),)), 0)
                       for k in ("ok", "reject", "review")}
                if sum(got.values()) >= 50:
                    break
            assert time.monotonic() < deadline, "the agent made no 50 decisions in 300 s"
            time.sleep(0.05)
        assert server.url.startswith("http://127.0.0.1:")
        journal = agent.journal.counts()
        assert sum(got.values()) <= journal["total"]
        assert s[("edge_agent_deadline_misses_total", ())] >= 0
        inf = s[("edge_agent_latency_seconds_bucket", (("le", "+Inf"), ("stage", "total")))]
        assert inf >= 50
        assert s[("edge_agent_latency_seconds_count", (("stage", "total"),))] == inf
        # cumulative buckets: each holds at least the ones below it, +Inf holds all
        total = sorted((float(dict(k[1])["le"]), v) for k, v in s.items()
                       if k[0] == "edge_agent_latency_seconds_bucket"
                       and dict(k[1])["stage"] == "total")
        assert len(total) > 2 and total[-1] == (float("inf"), inf)
        assert [v for _, v in total] == sorted(v for _, v in total)
        assert ("edge_agent_latency_seconds_count", (("stage", "inference"),)) in s
        model = [k for k in s if k[0] == "edge_agent_info"]
        assert model and dict(model[0][1])["state"] == "running"
    finally:
        run.stop()
    assert server._server is None  # stopped with the agent


def test_a_taken_port_is_a_fault_and_the_line_keeps_running(sim_config):
    with busy_port() as port:
        agent = agent_with(sim_config, port=port)
        metrics.attach(agent)
        run = AgentThread(agent).start()
        try:
            deadline = time.monotonic() + 20
            while "metrics" not in agent.faults and time.monotonic() < deadline:
                time.sleep(0.05)
            assert f"127.0.0.1:{port}" in agent.faults["metrics"]
            n = agent.stats.items
            time.sleep(0.3)
            assert agent.stats.items > n and agent.state == "running"
            assert "metrics" in agent.snapshot()["faults"]
        finally:
            run.stop()
