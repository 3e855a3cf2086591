"""The FimWatcher's volume fields (a subject's `coalesce`, the spec's `lineBudget`) and a
subject's `attributes` and `hash` reach the WatchSpec fimd gets, and a change of any of
them updates the watch (its config hash)."""

from __future__ import annotations

import attrs

from libs.k8s.model import FimWatcherSpec, ScanSpec
from services.controller.desired import desired_watch, scan_request
from services.controller.tests.builders import pod, watcher


def test_coalesce_and_line_budget_are_passed_to_fimd() -> None:
    base = watcher()
    assert base.spec is not None
    subject = attrs.evolve(base.spec.subjects[0], coalesce="1500ms")
    spec = attrs.evolve(base.spec, subjects=(subject, base.spec.subjects[0]), line_budget=250)
    target = pod()
    want = desired_watch(base, spec, target, target.containers[0])
    assert [s.coalesce_ms for s in want.spec.subjects] == [1500, 0]
    assert want.spec.line_budget == 250
    plain = desired_watch(base, base.spec, target, target.containers[0])
    assert (plain.spec.line_budget, plain.spec.subjects[0].coalesce_ms) == (0, 0)
    assert len({plain.config_hash, want.config_hash}) == 2
    budget_only: FimWatcherSpec = attrs.evolve(base.spec, line_budget=251)
    assert desired_watch(base, budget_only, target, target.containers[0]).config_hash not in {
        plain.config_hash,
        want.config_hash,
    }


def test_attributes_and_hash_are_passed_to_fimd() -> None:
    base = watcher()
    assert base.spec is not None
    hashed = attrs.evolve(base.spec.subjects[0], hash="sha256")
    attributed = attrs.evolve(base.spec.subjects[0], attributes=True)
    spec = attrs.evolve(base.spec, subjects=(hashed, attributed, base.spec.subjects[0]))
    target = pod()
    want = desired_watch(base, spec, target, target.containers[0])
    assert [(s.attributes, s.hash) for s in want.spec.subjects] == [
        (False, "sha256"),
        (True, ""),
        (False, ""),
    ]
    plain = desired_watch(base, base.spec, target, target.containers[0])
    only_hash = attrs.evolve(base.spec, subjects=(hashed,))
    only_attributes = attrs.evolve(base.spec, subjects=(attributed,))
    hashes = {
        desired_watch(base, s, target, target.containers[0]).config_hash
        for s in (base.spec, only_hash, only_attributes)
    }
    assert len(hashes) == 3  # switching either on updates the watch
    assert plain.config_hash in hashes


def test_the_scan_interval_and_a_scan_request_are_passed_to_fimd() -> None:
    base = watcher()
    assert base.spec is not None
    target = pod()
    plain = desired_watch(base, base.spec, target, target.containers[0])
    assert (plain.spec.scan_interval_s, plain.spec.scan_request) == (0, "")
    weekly = attrs.evolve(base.spec, scan=ScanSpec(interval="168h"))
    want = desired_watch(base, weekly, target, target.containers[0])
    assert want.spec.scan_interval_s == 604800
    asked = attrs.evolve(base, scan_requested="2026-12-01T10:00:00Z")
    requested = desired_watch(asked, base.spec, target, target.containers[0])
    assert requested.spec.scan_request == scan_request("2026-12-01T10:00:00Z")
    assert len(requested.spec.scan_request) == 16
    assert len({plain.config_hash, want.config_hash, requested.config_hash}) == 3
