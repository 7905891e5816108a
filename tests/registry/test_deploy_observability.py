"""deploy/'s Grafana dashboard and Prometheus alert rules name only metrics a real `/metrics` serves,
and the Kubernetes manifests have Prometheus scrape it.

The server runs with everything that registers metrics turned on (a quota, a pull-through upstream,
a webhook endpoint) and one `registry gc` behind it, so every family the code can export is in its
exposition (a family without samples yet still has its HELP and TYPE lines with one worker)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.metrics import scrape
from tests.support.servers import REPO_ROOT, free_port, start_cargobay

DEPLOY = REPO_ROOT / "deploy"
_NAME = re.compile(r"\bcargobay_[a-z_]+")
_HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


def _expressions() -> dict[str, list[str]]:
    """Every PromQL expression in the dashboard and the alert rules, by where it is."""
    dashboard = json.loads((DEPLOY / "grafana" / "cargobay.json").read_text())
    found: dict[str, list[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            found.setdefault(f"dashboard panel {panel['title']!r}", []).append(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.setdefault(f"dashboard variable {variable['name']}", []).append(variable["definition"])
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            found.setdefault(f"alert {rule['alert']}", []).append(rule["expr"])
    return found


def test_the_dashboard_and_the_alert_rules_use_only_metrics_the_registry_serves(tmp_path: Path) -> None:
    config = {
        "storage": {"filesystem": {"root": str(tmp_path / "data")}},
        "metrics": {"anonymous": True},
        "policy": {"quotas": [{"repositories": "team-a/*", "limit": "1GiB"}]},
        "proxy": {"upstreams": [{"host": "upstream.invalid", "url": f"http://127.0.0.1:{free_port()}"}]},
        "notifications": {"endpoints": [{"name": "hook", "url": f"http://127.0.0.1:{free_port()}/events"}]},
    }
    config_path = tmp_path / "gc.yaml"
    config_path.write_text(yaml.safe_dump(config))
    gc = subprocess.run([sys.executable, "-m", "registry", "gc", "--config", str(config_path)],
                        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert gc.returncode == 0, gc.stderr
    server = start_cargobay(tmp_path, config=config)
    try:
        served = scrape(f"{server.url}/metrics")
    finally:
        server.stop()
    names = served.families | {s.name for s in served.samples}
    names |= {f"{family}_total" for family in served.families}  # the parser names counters without it
    unknown = {}
    for where, expressions in _expressions().items():
        for expression in expressions:
            for name in _NAME.findall(expression):
                base = next((name[:-len(s)] for s in _HISTOGRAM_SERIES if name.endswith(s)), name)
                if name not in names and base not in names:
                    unknown.setdefault(where, set()).add(name)
    assert unknown == {}, f"metrics no /metrics serves: {unknown}"
    assert len(_expressions()) > 20  # the dashboard and the rules were read, not skipped


def test_the_kubernetes_pods_are_scraped_on_their_metrics_listener() -> None:
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]
    config = yaml.safe_load(yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())["data"]["config.yaml"])
    host, _, port = config["metrics"]["listen"].rpartition(":")
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == port and annotations["prometheus.io/path"] == "/metrics"
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports["metrics"] == int(port) and host == "0.0.0.0"
    # The metrics port is the pods' own: the Service, which the outside world reaches, does not carry it.
    service = next(doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / "service.yaml").read_text())
                   if doc["kind"] == "Service")
    assert not {"metrics", int(port)} & {p.get("targetPort", p["port"]) for p in service["spec"]["ports"]}
