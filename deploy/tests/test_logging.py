"""The log-ingestion and alerting configurations parse, and the alerts fire as documented."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

LOGGING = Path("deploy/logging")


def test_prometheus_alerts_fire_on_critical_path_events_only() -> None:
    promtool = shutil.which("promtool", path="/usr/bin:/bin")
    assert promtool, "promtool missing: run tools/setup.sh (Debian package prometheus)"
    subprocess.run([promtool, "check", "rules", "prometheus-rules.yaml"], cwd=LOGGING, check=True)
    subprocess.run(
        [promtool, "test", "rules", "prometheus-rules.test.yaml"], cwd=LOGGING, check=True
    )


@pytest.mark.parametrize("name", ["vector.yaml", "promtail.yaml", "loki-rules.yaml"])
def test_yaml_configs_parse(name: str) -> None:
    assert yaml.safe_load((LOGGING / name).read_text())


def test_elastic_pipeline_parses_the_message_as_json() -> None:
    pipeline = json.loads((LOGGING / "elastic-ingest-pipeline.json").read_text())
    assert pipeline["processors"][0]["json"]["field"] == "message"
