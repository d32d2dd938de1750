"""The README's Prometheus setup, run for real: its alert rules through `promtool test rules`, and
its scrape config in Debian's Prometheus against a running `newsletter serve`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, SECRET, ready_sample, write_config
from .smtp_server import free_port
from .webhelpers import Daemon, Served, samples

PROMTOOL, PROMETHEUS = shutil.which("promtool"), shutil.which("prometheus")
NODE_EXPORTER = shutil.which("prometheus-node-exporter")
pytestmark = pytest.mark.skipif(PROMTOOL is None or PROMETHEUS is None or NODE_EXPORTER is None,
                                reason="Debian's prometheus and prometheus-node-exporter packages are not installed "
                                       "(.ci/run installs them)")
TOKEN = "scrape-token-for-tests"


def readme_yaml(name: str) -> str:
    """The README's YAML block whose first line is the comment `# name`."""
    blocks = re.findall(r"```yaml\n(# (\S+)\n.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [text for text, title in blocks if title == name]
    assert found, f"the README has no ```yaml block starting with '# {name}'"
    return found[0]


def _rules(tmp_path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    path = tmp_path / "newsletter.rules.yml"
    path.write_text(readme_yaml("newsletter.rules.yml"))
    rules = {rule["alert"]: rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]}
    return path, rules


def test_the_readmes_rules_are_valid(tmp_path):
    path, rules = _rules(tmp_path)
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# Each alert: its input series (one sample a minute), a minute when it must fire with the labels it
# must carry, and a minute when it must not (the condition not yet true, or not yet for long enough).
CASES: dict[str, tuple[list[tuple[str, str]], int, dict[str, str], int]] = {
    "NewsletterDown": ([('up{job="newsletter", instance="news:443"}', "1 1 0x20")],
                       10, {"job": "newsletter", "instance": "news:443"}, 5),
    # Written each minute until minute 5, then never again: over 600 s old from minute 16, firing from 21.
    "NewsletterCronStopped": ([('node_textfile_mtime_seconds{file="/var/lib/node_exporter/textfile/newsletter.prom",'
                                ' job="node"}', "0+60x5 300x40"),
                               ('node_textfile_mtime_seconds{file="/var/lib/node_exporter/textfile/other.prom",'
                                ' job="node"}', "0x45")],
                              25, {"job": "node", "file": "/var/lib/node_exporter/textfile/newsletter.prom"}, 12),
    "NewsletterRowsWaiting": ([('newsletter_oldest_pending_age_seconds{job="newsletter"}', "0x5 4000x30")],
                              20, {"job": "newsletter"}, 12),
    # Sent at time 0 and never since: 8 days are minute 11520; firing an hour after.
    "NewsletterNothingSent": ([('newsletter_send_last_finished_timestamp_seconds{job="node", list="weekly"}',
                                "0x11700"),
                               ('newsletter_send_last_finished_timestamp_seconds{job="node", list="daily"}',
                                "0+60x11700")],
                              11650, {"job": "node", "list": "weekly"}, 11560),
    # Unsubscribes fail from minute 11 on: firing from 16; the 404s of other paths are not errors.
    "NewsletterWebErrors": ([('newsletter_http_requests_total{job="newsletter", route="/unsubscribe/{token}", '
                              'method="POST", status="500"}', "0x10 1+1x30"),
                             ('newsletter_http_requests_total{job="newsletter", route="other", method="GET", '
                              'status="404"}', "0+5x40")],
                            25, {"route": "/unsubscribe/{token}"}, 14),
    # A day of 1,000 active members, then 900: weekly fires; monthly, losing 2 %, does not.
    "NewsletterMembersFalling": ([('newsletter_list_members{job="newsletter", list="weekly", status="active"}',
                                   "1000x1500 900x60"),
                                  ('newsletter_list_members{job="newsletter", list="monthly", status="active"}',
                                   "1000x1500 980x60")],
                                 1530, {"job": "newsletter", "list": "weekly", "status": "active"}, 1510),
}


def _summary(rule: dict[str, Any], labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], rule["annotations"]["summary"])


def test_each_rule_fires_when_it_should_and_not_before(tmp_path):
    path, rules = _rules(tmp_path)
    assert set(CASES) == set(rules), "every rule in the README needs a case here"
    tests = []
    for alert, (series, firing_at, labels, quiet_at) in CASES.items():
        expected = {"exp_labels": labels, "exp_annotations": {"summary": _summary(rules[alert], labels)}}
        tests.append({
            "interval": "1m",
            "input_series": [{"series": name, "values": values} for name, values in series],
            "alert_rule_test": [
                {"eval_time": f"{quiet_at}m", "alertname": alert, "exp_alerts": []},
                {"eval_time": f"{firing_at}m", "alertname": alert, "exp_alerts": [expected]},
            ],
        })
    spec = tmp_path / "rules_test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [path.name], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([PROMTOOL, "test", "rules", str(spec)], capture_output=True, text=True, check=False,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _query(prometheus: Daemon, path: str, **params: str) -> Any:
    return json.loads(prometheus.get(f"{path}?{urllib.parse.urlencode(params)}" if params else path))["data"]


def _prometheus_config(tmp_path: Path, serve_port: int, rules: Path) -> Path:
    """The README's prometheus.yml, pointed at the local serve, plus a job whose token is wrong."""
    config = yaml.safe_load(readme_yaml("prometheus.yml"))
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    job = config["scrape_configs"][0]
    (tmp_path / "good.token").write_text(TOKEN + "\n")
    (tmp_path / "bad.token").write_text("not-the-token\n")
    job.update(scheme="http", static_configs=[{"targets": [f"127.0.0.1:{serve_port}"]}])
    job["authorization"]["credentials_file"] = str(tmp_path / "good.token")
    config["scrape_configs"].append({**job, "job_name": "wrong-token",
                                     "authorization": {"credentials_file": str(tmp_path / "bad.token")}})
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_prometheus_scrapes_a_running_serve_with_the_readmes_config(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("NEWSLETTER_METRICS_TOKEN", TOKEN)
    serve_port, prometheus_port = free_port(), free_port()
    newsletter_config = write_config(tmp_path, "\n[metrics]\nenabled = true\n",
                                     base_url=f"http://127.0.0.1:{serve_port}")
    rules, _ = _rules(tmp_path)
    config = _prometheus_config(tmp_path, serve_port, rules)
    with Served(newsletter_config, serve_port):
        prometheus = Daemon([str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prometheus_port}"], prometheus_port)
        try:
            targets = _wait_for_both_scraped(prometheus)
            members = _query(prometheus, "/api/v1/query", query='newsletter_list_members{job="newsletter"}')["result"]
            rule_health = [rule["health"] for group in _query(prometheus, "/api/v1/rules")["groups"]
                           for rule in group["rules"]]
        finally:
            prometheus.stop()
    assert targets["newsletter"]["health"] == "up", targets["newsletter"]
    assert targets["wrong-token"]["health"] == "down"
    assert "401" in targets["wrong-token"]["lastError"]
    assert {(m["metric"]["list"], m["metric"]["status"]) for m in members} >= {("weekly", "active")}
    assert rule_health and set(rule_health) == {"ok"}


def _wait_for_both_scraped(prometheus: Daemon) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        targets = {t["labels"]["job"]: t for t in _query(prometheus, "/api/v1/targets")["activeTargets"]}
        if len(targets) == 2 and all(t["health"] != "unknown" for t in targets.values()):
            return targets
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus did not scrape both jobs in 60 s: {targets}")
        time.sleep(0.25)


def test_node_exporter_reads_the_files_of_two_runs_side_by_side(sg_run, tmp_path):
    """Cron's `send --due` and a send by hand, each with its own file in node_exporter's folder: it
    must read both whole (a series in two files is an error there, and one of them is dropped)."""
    folder = tmp_path / "textfile"
    issue = ready_sample(tmp_path)
    assert sg_run("subscribers", "import", ROOT / "subscribers" / "sample.csv", "--list", "weekly").exit_code == 0
    assert sg_run("send", issue, "--list", "weekly", "--yes", "--metrics-file", folder / "by-hand.prom").exit_code == 0
    due = sg_run("send", "--due", "--list", "weekly", "--metrics-file", folder / "newsletter.prom")
    assert due.exit_code == 0, due.output
    port = free_port()
    exporter = Daemon([str(NODE_EXPORTER), "--collector.disable-defaults", "--collector.textfile",
                       f"--collector.textfile.directory={folder}", f"--web.listen-address=127.0.0.1:{port}"],
                      port, ready_path="/metrics")  # its first scrape: the second shows the first one's errors
    try:
        second = exporter.get("/metrics")
    finally:
        log = exporter.stop()
    found = samples(second)
    assert "was collected before" not in log and "error gathering" not in log, log[-2000:]
    assert found[("promhttp_metric_handler_errors_total", (("cause", "gathering"),))] == 0
    assert found[("node_textfile_scrape_error", ())] == 0
    by_hand = [labels for (name, labels), v in found.items()
               if name == "newsletter_deliveries_total" and v == 12]
    assert by_hand, second[-3000:]
    members = [labels for name, labels in found if name == "newsletter_list_members"]
    assert len(members) == len(set(members)) > 0
