"""FimWatcher status: counts confirmed by fimd state, conditions with clear reasons."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from fim.v1 import fim_pb2
from libs.k8s.model import (
    MAX_CONDITION_MESSAGE_LENGTH,
    MAX_SCAN_REQUEST_LENGTH,
    ConditionStatus,
    FimWatcherStatus,
    ScanStatus,
)
from services.controller.bounds import MAX_STORED
from services.controller.desired import Desired, Key, desired_watches, scan_request
from services.controller.objects import Watcher
from services.controller.state import LastScan, NodeState, NodeView, Observed, Rejection
from services.controller.status import MAX_PROBLEM_LENGTH, watcher_status
from services.controller.tests.builders import NOW, holding, pod, watcher

W1 = watcher(uid="w1")
PODS = [pod("web-0", uid="p1", node="n1"), pod("web-1", uid="p2", node="n2")]


def status(nodes: dict[str, NodeView], w: Watcher = W1) -> FimWatcherStatus:
    return watcher_status(w, PODS, nodes, now=NOW)


def conditions(s: FimWatcherStatus) -> dict[str, tuple[ConditionStatus, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in s.conditions}


def both_active() -> dict[str, NodeView]:
    return {n: NodeView(holding(n, [W1], PODS)) for n in ("n1", "n2")}


def test_all_watched_is_ready() -> None:
    s = status(both_active())
    assert (s.observable_pods, s.watched_pods, s.observed_generation) == (2, 2, 1)
    assert conditions(s) == {
        "Ready": (ConditionStatus.TRUE, "AllPodsWatched", "2 of 2 pods watched"),
        "Degraded": (ConditionStatus.FALSE, "AsExpected", ""),
    }


@pytest.mark.parametrize(
    "phase",
    [fim_pb2.WATCH_PHASE_PENDING, fim_pb2.WATCH_PHASE_UNSPECIFIED],
    ids=["pending", "unset"],
)
def test_not_active_is_not_watched(phase: fim_pb2.WatchPhase.ValueType) -> None:
    nodes = {**both_active(), "n2": NodeView(holding("n2", [W1], PODS, phase=phase))}
    s = status(nodes)
    assert (s.observable_pods, s.watched_pods) == (2, 1)
    assert conditions(s)["Ready"] == (
        ConditionStatus.FALSE,
        "WatchesPending",
        "1 of 2 pods watched",
    )
    assert conditions(s)["Degraded"][0] is ConditionStatus.FALSE


def test_outdated_config_is_not_watched() -> None:
    changed = watcher(uid="w1", paths=("/srv",))
    assert watcher_status(changed, PODS, both_active(), now=NOW).watched_pods == 0


def test_unreachable_fimd_degrades_only_its_node() -> None:
    nodes = {**both_active(), "n2": NodeView(None, "deadline exceeded")}
    s = status(nodes)
    assert s.watched_pods == 1
    assert conditions(s)["Degraded"] == (
        ConditionStatus.TRUE,
        "FimdUnreachable",
        "fimd on node n2 unreachable: deadline exceeded",
    )


def test_node_without_fimd() -> None:
    s = status({"n1": both_active()["n1"]})
    assert (s.observable_pods, s.watched_pods) == (2, 1)
    assert conditions(s)["Degraded"] == (
        ConditionStatus.TRUE,
        "NoFimd",
        "no fimd on node n2 (pod web-1)",
    )


def test_failed_watch_reason_and_message() -> None:
    state = holding("n2", [W1], PODS)
    key = Key("w1", "p2", "app")
    failed = attrs.evolve(
        state.watches[key],
        phase=fim_pb2.WATCH_PHASE_FAILED,
        reason="ContainerNotFound",
        message="no process for container",
    )
    s = status({**both_active(), "n2": NodeView(state.applied(observed=[failed]))})
    assert s.watched_pods == 1
    assert conditions(s)["Degraded"] == (
        ConditionStatus.TRUE,
        "WatchFailed",
        "pod web-1 container app: ContainerNotFound: no process for container",
    )


def test_active_with_warning_is_watched_but_degraded() -> None:
    state = holding("n1", [W1], PODS)
    key = Key("w1", "p1", "app")
    warned = attrs.evolve(state.watches[key], reason="WatchLimit", message="max_user_watches")
    s = status({**both_active(), "n1": NodeView(state.applied(observed=[warned]))})
    assert s.watched_pods == 2
    assert conditions(s)["Degraded"][:2] == (ConditionStatus.TRUE, "WatchDegraded")


def test_rejected_create_is_reported() -> None:
    key = Key("w1", "p2", "app")
    spec_hash = holding("n2", [W1], PODS).watches[key].config_hash
    rejection = Rejection(
        config_hash=spec_hash, code="INVALID_ARGUMENT", message="bad path", retry_at=NOW
    )
    state = NodeState(node="n2", instance_id="i").applied(rejected={key: rejection})
    s = status({**both_active(), "n2": NodeView(state)})
    assert conditions(s)["Degraded"] == (
        ConditionStatus.TRUE,
        "WatchRejected",
        "pod web-1 container app: INVALID_ARGUMENT: bad path",
    )


BUDGET = "NodeCapacity: inotify watches: 10 of 10 in use (budget: half of max_user_watches 20)"


def refused(
    nodes: dict[str, NodeView], node: str, pod_uid: str, *, code: str, message: str
) -> dict[str, NodeView]:
    """`nodes` with the create of `pod_uid`'s watch rejected on `node` instead of held."""
    state = nodes[node].state
    assert state is not None
    key = Key("w1", pod_uid, "app")
    rejection = Rejection(
        config_hash=state.watches[key].config_hash, code=code, message=message, retry_at=NOW
    )
    return {
        **nodes,
        node: NodeView(state.applied(destroyed=[key]).applied(rejected={key: rejection})),
    }


def test_capacity_rejection_is_node_capacity_naming_node_and_budget() -> None:
    nodes = refused(both_active(), "n2", "p2", code="RESOURCE_EXHAUSTED", message=BUDGET)
    s = status(nodes)
    assert (s.observable_pods, s.watched_pods) == (2, 1)
    assert conditions(s)["Ready"][:2] == (ConditionStatus.FALSE, "WatchesPending")
    assert conditions(s)["Degraded"] == (
        ConditionStatus.TRUE,
        "NodeCapacity",
        f"pod web-1 container app: no capacity on node n2: {BUDGET}",
    )


def test_node_capacity_outranks_a_rejected_spec_but_not_an_unreachable_node() -> None:
    full = refused(both_active(), "n2", "p2", code="RESOURCE_EXHAUSTED", message=BUDGET)
    both = refused(full, "n1", "p1", code="INVALID_ARGUMENT", message="bad path")
    reason, message = conditions(status(both))["Degraded"][1:]
    assert reason == "NodeCapacity"
    assert message.startswith("pod web-1 container app: no capacity on node n2")
    assert message.endswith("; pod web-0 container app: INVALID_ARGUMENT: bad path")
    unreachable = {**full, "n1": NodeView(None, "refused")}
    assert conditions(status(unreachable))["Degraded"][1] == "FimdUnreachable"


def test_capacity_condition_clears_when_the_retried_create_succeeds() -> None:
    nodes = refused(both_active(), "n2", "p2", code="RESOURCE_EXHAUSTED", message=BUDGET)
    first = status(nodes)
    state = nodes["n2"].state
    assert state is not None
    created = both_active()["n2"].state
    assert created is not None
    key = Key("w1", "p2", "app")
    retried = {**nodes, "n2": NodeView(state.applied(observed=[created.watches[key]]))}
    later = NOW + timedelta(minutes=1)
    s = watcher_status(attrs.evolve(W1, status=first), PODS, retried, now=later)
    assert s.watched_pods == 2
    assert conditions(s) == {
        "Ready": (ConditionStatus.TRUE, "AllPodsWatched", "2 of 2 pods watched"),
        "Degraded": (ConditionStatus.FALSE, "AsExpected", ""),
    }


def test_message_is_bounded_however_long_fimd_messages_are() -> None:
    pods = [pod(f"web-{i}", uid=f"p{i}", node="n1") for i in range(40)]
    state = NodeState(node="n1", instance_id="i")
    for p in pods:
        key = Key("w1", p.uid, "app")
        want = holding("n1", [W1], [p]).watches[key]
        # A long, distinct message per watch: nothing repeats, nothing is short.
        message = f"NodeCapacity: {p.name} " + "x" * MAX_CONDITION_MESSAGE_LENGTH
        rejection = Rejection(
            config_hash=want.config_hash, code="RESOURCE_EXHAUSTED", message=message, retry_at=NOW
        )
        state = state.applied(rejected={key: rejection})
    s = watcher_status(W1, pods, {"n1": NodeView(state)}, now=NOW)
    reason, message = conditions(s)["Degraded"][1:]
    assert reason == "NodeCapacity"
    assert len(message) <= MAX_CONDITION_MESSAGE_LENGTH
    assert message.count("no capacity on node n1: NodeCapacity: web-") == 5
    # Each listed problem (web-0, web-1, web-10, web-11, web-12: sorted) is clipped to its
    # share of the message with a marker giving its original length.
    problems = message.removesuffix("; and 35 more").split("; ")
    assert len(problems) == 5
    for listed, name in zip(
        problems, ["web-0", "web-1", "web-10", "web-11", "web-12"], strict=True
    ):
        full = f"pod {name} container app: no capacity on node n1: NodeCapacity: {name} "
        full += "x" * MAX_CONDITION_MESSAGE_LENGTH
        assert len(listed) == MAX_PROBLEM_LENGTH
        assert listed.startswith(full[:1000])
        assert listed.endswith(f"x... [truncated, {len(full)} characters]")


def test_invalid_spec_message_is_bounded() -> None:
    invalid = attrs.evolve(W1, spec=None, error="e" * (MAX_CONDITION_MESSAGE_LENGTH + 10))
    message = conditions(status(both_active(), invalid))["Degraded"][2]
    assert len(message) == MAX_CONDITION_MESSAGE_LENGTH
    assert message.endswith(f"e... [truncated, {MAX_CONDITION_MESSAGE_LENGTH + 10} characters]")


def test_most_severe_reason_wins_and_message_is_bounded() -> None:
    many = [pod(f"web-{i}", uid=f"p{i}", node=f"gone{i}") for i in range(8)]
    nodes = {"n1": NodeView(None, "refused")}
    s = watcher_status(W1, [*many, PODS[0]], nodes, now=NOW)
    reason, message = conditions(s)["Degraded"][1:]
    assert reason == "FimdUnreachable"
    assert message.startswith("fimd on node n1 unreachable: refused; no fimd on node gone0")
    assert message.endswith("; and 4 more")


def test_a_node_whose_sync_fails_is_reported_without_the_exception_message() -> None:
    # Its state is unknown because the controller's own sync of the node raises: say so,
    # naming the exception type only (its message may quote other tenants' file names).
    nodes = {**both_active(), "n2": NodeView(None, "LookupError", sync_failed=True)}
    s = status(nodes)
    assert (s.observable_pods, s.watched_pods) == (2, 1)
    assert conditions(s)["Degraded"] == (
        ConditionStatus.TRUE,
        "NodeSyncFailed",
        "watches on node n2 not reconciled: the controller's sync of the node fails"
        " (LookupError); retrying with backoff, details in its log",
    )
    # An unreachable fimd is the more severe problem (it explains more).
    both = {"n1": NodeView(None, "refused"), "n2": nodes["n2"]}
    assert conditions(status(both))["Degraded"][1] == "FimdUnreachable"


def test_invalid_spec_is_degraded_with_the_error() -> None:
    invalid = attrs.evolve(W1, spec=None, error="spec.subjects[0].paths[0]: must be absolute")
    s = status(both_active(), invalid)
    assert (s.observable_pods, s.watched_pods) == (0, 0)
    assert conditions(s) == {
        "Ready": (ConditionStatus.FALSE, "InvalidSpec", "the spec is invalid"),
        "Degraded": (
            ConditionStatus.TRUE,
            "InvalidSpec",
            "spec.subjects[0].paths[0]: must be absolute",
        ),
    }


def test_every_condition_names_the_generation_it_describes() -> None:
    w = watcher(uid="w1", generation=7)
    s = watcher_status(w, PODS, {n: NodeView(holding(n, [w], PODS)) for n in ("n1", "n2")}, now=NOW)
    assert s.observed_generation == 7
    assert [c.observed_generation for c in s.conditions] == [7, 7]


def test_exactly_the_listed_number_of_problems_has_no_tail() -> None:
    five = [pod(f"web-{i}", uid=f"p{i}", node=f"gone{i}") for i in range(5)]
    message = conditions(watcher_status(W1, five, {}, now=NOW))["Degraded"][2]
    assert message.count("no fimd on node") == 5
    assert "more" not in message


def _desired_view(
    state: NodeState, *, generation: int | None = None, container_id: str = ""
) -> NodeView:
    """A view whose node sync computed `state`'s hashes (for another generation or
    container, if given)."""
    key = Key("w1", "p1", "app")
    want = desired_watches(W1, PODS[:1])[key]
    known = W1.meta.generation if generation is None else generation
    reused = Desired(want.spec, "hash-the-node-sync-computed", known)
    if container_id:
        reused.spec.container_id = container_id
    observed = attrs.evolve(state.watches[key], config_hash="hash-the-node-sync-computed")
    return NodeView(state.applied(observed=[observed]), desired={key: reused})


def test_the_status_reuses_the_node_syncs_desired_hashes_unless_stale() -> None:
    state = holding("n1", [W1], PODS)
    current = _desired_view(state)
    assert watcher_status(W1, PODS[:1], {"n1": current}, now=NOW).watched_pods == 1
    # Computed for another generation or another container: computed again, so the
    # watch (reported with the reused hash) does not count as up to date.
    for stale in (_desired_view(state, generation=0), _desired_view(state, container_id="x")):
        assert watcher_status(W1, PODS[:1], {"n1": stale}, now=NOW).watched_pods == 0


def test_unchanged_world_gives_identical_status_and_no_patch() -> None:
    first = status(both_active())
    later = watcher_status(
        attrs.evolve(W1, status=first), PODS, both_active(), now=NOW + timedelta(hours=1)
    )
    assert later == first
    assert watcher_status(attrs.evolve(W1, status=first), PODS, both_active(), now=NOW) == first


def test_transition_time_moves_only_on_status_change() -> None:
    first = status(both_active())
    later = NOW + timedelta(minutes=5)
    nodes = {**both_active(), "n2": NodeView(None, "refused")}
    second = watcher_status(attrs.evolve(W1, status=first), PODS, nodes, now=later)
    times = {c.type: c.last_transition_time for c in second.conditions}
    assert times == {"Ready": later, "Degraded": later}
    third = watcher_status(attrs.evolve(W1, status=second), PODS, both_active(), now=later)
    assert conditions(third) == conditions(first)


def test_deleting_watcher_keeps_its_status() -> None:
    first = status(both_active())
    deleting = attrs.evolve(watcher(uid="w1", deleting=True), status=first)
    assert watcher_status(deleting, PODS, {}, now=NOW) == first


def test_pod_counts_once_with_several_containers() -> None:
    pods = [pod(uid="p1", node="n1", containers={"a": 1, "b": 2})]
    nodes = {"n1": NodeView(holding("n1", [W1], pods))}
    assert watcher_status(W1, pods, nodes, now=NOW).watched_pods == 1
    one_missing = holding("n1", [W1], pods).applied(destroyed=[Key("w1", "p1", "b")])
    assert watcher_status(W1, pods, {"n1": NodeView(one_missing)}, now=NOW).watched_pods == 0


def test_observed_from_proto() -> None:
    proto = fim_pb2.WatchStatus(
        key=fim_pb2.WatchKey(watcher_uid="w", pod_uid="p", container_name="c"),
        config_hash="h",
        phase=fim_pb2.WATCH_PHASE_FAILED,
        reason="R",
        message="m",
    )
    assert Observed.from_proto(proto) == Observed(
        key=Key("w", "p", "c"),
        config_hash="h",
        phase=fim_pb2.WATCH_PHASE_FAILED,
        reason="R",
        message="m",
    )


def test_observed_from_proto_bounds_fimd_text() -> None:
    # fimd's message names files a pod controls: kept bounded, with the original length.
    long_name = "/data/" + "\u00e9" * 1_000_000
    proto = fim_pb2.WatchStatus(
        key=fim_pb2.WatchKey(watcher_uid="w", pod_uid="p", container_name="c"),
        reason="R" * 10_000,
        message=f"inotify watch limit hit at {long_name}",
    )
    observed = Observed.from_proto(proto)
    assert len(observed.reason) == len(observed.message) == MAX_STORED
    assert observed.message.startswith("inotify watch limit hit at /data/\u00e9")
    assert observed.message.endswith(f"[truncated, {len(proto.message)} characters]")
    assert observed.reason.endswith("[truncated, 10000 characters]")


def _scanned(view: NodeView, scan: LastScan) -> NodeView:
    assert view.current is not None
    watches = {k: attrs.evolve(o, last_scan=scan) for k, o in view.current.watches.items()}
    return NodeView(attrs.evolve(view.current, watches=watches))


def test_last_scan_is_the_latest_time_and_the_sums_of_each_containers_last() -> None:
    assert status(both_active()).last_scan is None  # none yet
    early = LastScan(time=NOW - timedelta(hours=1), scanned=10, added=1, removed=0, changed=2)
    late = LastScan(time=NOW + timedelta(microseconds=5), scanned=5, added=0, removed=3, changed=0)
    nodes = both_active()
    nodes = {"n1": _scanned(nodes["n1"], early), "n2": _scanned(nodes["n2"], late)}
    s = status(nodes)
    assert s.last_scan == ScanStatus(
        time=NOW, scanned=15, added=1, removed=3, changed=2, containers=2
    )
    # A node that cannot be read contributes nothing (its last known counts are not reused).
    assert status({**nodes, "n2": NodeView(None, "deadline exceeded")}).last_scan == ScanStatus(
        time=NOW - timedelta(hours=1), scanned=10, added=1, removed=0, changed=2, containers=2
    )


def test_last_scan_names_the_scan_request_once_every_container_answered_it() -> None:
    asked = attrs.evolve(W1, scan_requested="2026-12-01T10:00:00.000001Z-ab")
    digest = scan_request(asked.scan_requested)
    old = LastScan(time=NOW, scanned=3, added=0, removed=0, changed=0, request="")
    new = attrs.evolve(old, scanned=4, added=1, request=digest)
    nodes = both_active()
    one = {"n1": _scanned(nodes["n1"], new), "n2": _scanned(nodes["n2"], old)}
    s = status(one, asked).last_scan
    assert s is not None
    assert (s.request, s.answered, s.containers, s.scanned) == ("", 1, 2, 7)
    both = {"n1": _scanned(nodes["n1"], new), "n2": _scanned(nodes["n2"], new)}
    s = status(both, asked).last_scan
    assert s is not None
    assert (s.request, s.answered, s.containers, s.added) == (asked.scan_requested, 2, 2, 2)
    # A container that has not compared yet (no last scan) has not answered.
    partial = {"n1": _scanned(nodes["n1"], new), "n2": nodes["n2"]}
    s = status(partial, asked).last_scan
    assert s is not None
    assert (s.request, s.answered, s.containers) == ("", 1, 2)
    # Without the annotation nothing is answered, whatever fimd echoes.
    s = status(both).last_scan
    assert s is not None
    assert (s.request, s.answered) == ("", 0)
    # A long annotation is named by its first characters (bounded status).
    huge = attrs.evolve(W1, scan_requested="x" * 10_000)
    echoed = attrs.evolve(new, request=scan_request(huge.scan_requested))
    done = {n: _scanned(nodes[n], echoed) for n in ("n1", "n2")}
    s = status(done, huge).last_scan
    assert s is not None
    assert s.request == "x" * MAX_SCAN_REQUEST_LENGTH
