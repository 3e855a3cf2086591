"""The node bookkeeping: what a node's record shows, and when a failing node stops blocking."""

from __future__ import annotations

from datetime import timedelta

import attrs

from fim.v1 import fim_pb2
from services.controller.desired import Key, desired_watches, scan_request
from services.controller.state import (
    NOT_CONTACTED,
    LastScan,
    NodeBook,
    NodeRecord,
    NodeState,
    Observed,
)
from services.controller.tests.builders import NOW, holding, pod, watcher

GRACE = timedelta(minutes=2)
W1 = watcher(uid="w1")
STATE = holding("n1", [W1], [pod(uid="p1")])


def test_a_new_node_is_waiting_for_first_contact_and_may_hold_anything() -> None:
    view = NodeRecord().view(NOW, GRACE)
    assert (view.state, view.error, view.first_contact_pending) == (None, NOT_CONTACTED, True)
    assert view.current is None
    assert view.may_hold("any")


def test_an_unreachable_node_keeps_its_last_state_and_blocks_until_the_grace_period() -> None:
    record = NodeRecord().read(STATE).unreachable("refused", NOW, maybe=["w2"])
    assert record.stale
    assert record.unreachable("refused again", NOW + GRACE).failing_since == NOW
    within = record.view(NOW + GRACE, GRACE)
    assert (within.state, within.error, within.current, within.expired) == (
        STATE,
        "refused",
        None,
        False,
    )
    assert within.may_hold("w1")  # it held w1's watch
    assert within.may_hold("w2")  # it was asked to hold w2's and did not answer
    assert not within.may_hold("w3")  # never: a deletion of w3 does not wait for it
    beyond = record.view(NOW + GRACE + timedelta(seconds=1), GRACE)
    assert beyond.expired
    assert not beyond.may_hold("w1")


def test_an_answer_makes_the_state_current_and_ends_the_failure() -> None:
    record = NodeRecord().unreachable("refused", NOW, maybe=["w2"]).read(STATE)
    assert (record.stale, record.error, record.failing_since, record.maybe_holds) == (
        False,
        "",
        None,
        frozenset(),
    )
    view = record.view(NOW, GRACE)
    assert (view.current, view.error) == (STATE, "")


def test_a_failed_sync_shows_the_exception_type_and_the_latest_failure_wins() -> None:
    failed = NodeRecord().read(STATE).failed("LookupError", NOW)
    view = failed.view(NOW, GRACE)
    assert (view.error, view.sync_failed, view.current) == ("LookupError", True, None)
    unreachable = failed.unreachable("refused", NOW).view(NOW, GRACE)
    assert (unreachable.error, unreachable.sync_failed) == ("refused", False)
    synced = failed.synced(STATE).view(NOW, GRACE)
    assert (synced.error, synced.sync_failed, synced.current) == ("", False, STATE)


def test_the_book_finds_the_nodes_that_hold_a_watcher_and_forgets_gone_ones() -> None:
    book = NodeBook()
    book.update("n1", lambda r: r.read(STATE))
    book.update("n2", lambda r: r.unreachable("refused", NOW, maybe=["w2"]))
    book.update("n3", lambda r: r.read(NodeState(node="n3", instance_id="i")))
    assert book.holding({"w1"}) == {"n1"}
    assert book.holding({"w2"}) == {"n2"}
    assert book.holding({"w1", "w2"}) == {"n1", "n2"}
    views = book.views(["n1", "n4"], NOW, GRACE)
    assert views["n1"].current == STATE
    assert views["n4"].first_contact_pending
    assert book.forget("n2") is not None
    assert sorted(book.nodes()) == ["n1", "n3"]


def test_applied_records_a_batch_of_calls_in_one_copy() -> None:
    key, other = Key("w1", "p1", "app"), Key("w9", "p9", "x")
    created = Observed(key=other, config_hash="h", phase=STATE.watches[key].phase)
    after = STATE.applied(observed=[created], destroyed=[key])
    assert set(after.watches) == {other}
    assert set(STATE.watches) == {key}  # immutable


def test_a_scan_request_is_awaited_until_every_active_baseline_watch_answered_it() -> None:
    plain = watcher(uid="w1")
    assert plain.spec is not None
    hashed = attrs.evolve(
        plain,
        spec=attrs.evolve(
            plain.spec, subjects=(attrs.evolve(plain.spec.subjects[0], hash="sha256"),)
        ),
        scan_requested="now",
    )
    pods = [pod("web-0", uid="p1", node="n1", containers={"a": 1, "b": 2})]
    desired = desired_watches(hashed, pods)
    state = holding("n1", [hashed], pods)
    assert state.awaits_scan(desired)  # nothing compared yet
    answered = LastScan(time=NOW, scanned=1, added=0, removed=0, changed=0, request="x")
    answered = attrs.evolve(answered, request=scan_request("now"))
    stale = attrs.evolve(answered, request="")
    keys = sorted(state.watches)
    one = _with_scans(state, {keys[0]: answered, keys[1]: stale})
    assert one.awaits_scan(desired)
    both = _with_scans(state, dict.fromkeys(keys, answered))
    assert not both.awaits_scan(desired)
    # Not awaited: no request, no baseline subject, or a watch that is not ACTIVE.
    assert not state.awaits_scan(desired_watches(attrs.evolve(hashed, scan_requested=""), pods))
    unhashed = attrs.evolve(plain, scan_requested="now")
    assert not holding("n1", [unhashed], pods).awaits_scan(desired_watches(unhashed, pods))
    pending = holding("n1", [hashed], pods, phase=fim_pb2.WATCH_PHASE_PENDING)
    assert not pending.awaits_scan(desired)


def _with_scans(state: NodeState, scans: dict[Key, LastScan]) -> NodeState:
    watches = {k: attrs.evolve(o, last_scan=scans.get(k)) for k, o in state.watches.items()}
    return attrs.evolve(state, watches=watches)
