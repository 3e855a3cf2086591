"""The log-ingestion and alerting configurations parse (no shipper runs here: parse-checked
only, see docs/logging.md), and the alerts fire as documented."""

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


def _fluent_bit_sections(path: Path) -> list[tuple[str, dict[str, str]]]:
    """Fluent Bit's classic format: `[SECTION]` headers, then `Key value` lines."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1], {}))
            continue
        key, _, value = line.partition(" ")
        assert sections, f"{path}: {line!r} outside a section"
        assert value.strip(), f"{path}: {key} has no value"
        sections[-1][1][key] = value.strip()
    return sections


def test_fluent_bit_config_parses_and_names_its_parser() -> None:
    config = _fluent_bit_sections(LOGGING / "fluent-bit.conf")
    assert {name for name, _ in config} <= {"SERVICE", "INPUT", "FILTER", "OUTPUT"}
    (service,) = [keys for name, keys in config if name == "SERVICE"]
    parsers = _fluent_bit_sections(LOGGING / service["Parsers_File"])
    assert {name for name, _ in parsers} == {"PARSER"}
    named = {keys["Name"] for _, keys in parsers}
    used = {keys["Parser"] for name, keys in config if name == "FILTER" and "Parser" in keys}
    assert used
    assert used <= named
