"""The pure reconcile core: node calls and finalizers for each scenario, no I/O."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from fim.v1 import fim_pb2
from services.controller.desired import Key
from services.controller.objects import Pod, Watcher
from services.controller.reconcile import (
    FinalizerAction,
    NodePlan,
    desired_for_node,
    finalizer_action,
    plan_node,
)
from services.controller.state import NodeState, NodeView, Rejection
from services.controller.tests.builders import NOW, cid, holding, pod, watcher

W1 = watcher(uid="w1")
P1 = pod(uid="p1", containers={"app": 1, "sidecar": 2})
EMPTY = NodeState(node="n1", instance_id="i1")


def calls(
    watchers: list[Watcher],
    pods: list[Pod],
    state: NodeState,
    *,
    retry_failed: bool = False,
) -> tuple[list[Key], list[tuple[Key, str]]]:
    """(destroyed keys, created (key, container id)) on node n1."""
    desired = desired_for_node("n1", watchers, pods)
    node_plan = plan_node(desired, state, now=NOW, retry_failed=retry_failed)
    created = [(want.key, want.spec.container_id) for want in node_plan.create]
    return list(node_plan.destroy), created


def k(watcher_uid: str, pod_uid: str, container: str) -> Key:
    return Key(watcher_uid, pod_uid, container)


@pytest.mark.parametrize(
    ("watchers", "pods", "state", "destroyed", "created"),
    [
        pytest.param(
            [W1],
            [P1],
            EMPTY,
            [],
            [(k("w1", "p1", "app"), cid(1)), (k("w1", "p1", "sidecar"), cid(2))],
            id="new-watch-per-running-container",
        ),
        pytest.param([W1], [P1], holding("n1", [W1], [P1]), [], [], id="steady-state-no-calls"),
        pytest.param(
            [W1, watcher("audit", uid="w2")],
            [pod(uid="p1")],
            EMPTY,
            [],
            [(k("w1", "p1", "app"), cid(1)), (k("w2", "p1", "app"), cid(1))],
            id="two-watchers-same-pod-each-own-watch",
        ),
        pytest.param(
            [W1],
            [pod(uid="p1", labels={"app": "db"})],
            holding("n1", [W1], [pod(uid="p1")]),
            [k("w1", "p1", "app")],
            [],
            id="pod-stops-matching-loses-watch",
        ),
        pytest.param(
            [W1],
            [pod(uid="p1", containers={"app": 9})],
            holding("n1", [W1], [pod(uid="p1")]),
            [],
            [(k("w1", "p1", "app"), cid(9))],
            id="container-restart-updates-same-key",
        ),
        pytest.param(
            [W1],
            [pod(uid="p1", phase="Pending", containers={})],
            EMPTY,
            [],
            [],
            id="pod-not-running-no-watch",
        ),
        pytest.param(
            [W1], [pod(uid="p1", containers={})], EMPTY, [], [], id="no-container-running-no-watch"
        ),
        pytest.param(
            [W1],
            [pod(uid="p1", containers={"app": 1, "late": 3})],
            holding("n1", [W1], [pod(uid="p1")]),
            [],
            [(k("w1", "p1", "late"), cid(3))],
            id="container-started-later-picked-up",
        ),
        pytest.param(
            [watcher(uid="w1", paths=("/etc",))],
            [pod(uid="p1")],
            holding("n1", [W1], [pod(uid="p1")]),
            [],
            [(k("w1", "p1", "app"), cid(1))],
            id="subjects-change-updates",
        ),
        pytest.param(
            [watcher(uid="w1", log_format="{path}")],
            [pod(uid="p1")],
            holding("n1", [W1], [pod(uid="p1")]),
            [],
            [(k("w1", "p1", "app"), cid(1))],
            id="logformat-change-updates",
        ),
        pytest.param(
            [watcher(uid="w1", labels={"tier": "front"})],
            [pod(uid="p1"), pod("web-1", uid="p2", labels={"tier": "front"})],
            holding("n1", [W1], [pod(uid="p1")]),
            [k("w1", "p1", "app")],
            [(k("w1", "p2", "app"), cid(1))],
            id="selector-change-moves-watches",
        ),
        pytest.param(
            [W1],
            [pod(uid="p1-new")],
            holding("n1", [W1], [pod(uid="p1")]),
            [k("w1", "p1", "app")],
            [(k("w1", "p1-new", "app"), cid(1))],
            id="pod-recreated-same-name-new-uid",
        ),
        pytest.param(
            [watcher(uid="w1-new")],
            [pod(uid="p1")],
            holding("n1", [W1], [pod(uid="p1")]),
            [k("w1", "p1", "app")],
            [(k("w1-new", "p1", "app"), cid(1))],
            id="watcher-recreated-same-name-new-uid",
        ),
        pytest.param(
            [W1],
            [pod(uid="p1", namespace="other")],
            EMPTY,
            [],
            [],
            id="pods-of-other-namespaces-not-selected",
        ),
        pytest.param(
            [W1], [pod(uid="p1", node="n2")], EMPTY, [], [], id="pods-of-other-nodes-not-here"
        ),
        pytest.param(
            [watcher(uid="w1", deleting=True)],
            [P1],
            holding("n1", [W1], [P1]),
            [k("w1", "p1", "app"), k("w1", "p1", "sidecar")],
            [],
            id="deleted-watcher-destroyed",
        ),
        pytest.param(
            [],
            [P1],
            holding("n1", [W1], [P1]),
            [k("w1", "p1", "app"), k("w1", "p1", "sidecar")],
            [],
            id="watcher-gone-without-finalizer-destroyed",
        ),
        pytest.param(
            [attrs.evolve(W1, spec=None, error="spec.subjects: must have at least 1 item(s)")],
            [P1],
            holding("n1", [W1], [P1]),
            [k("w1", "p1", "app"), k("w1", "p1", "sidecar")],
            [],
            id="invalid-watcher-gets-no-watches",
        ),
        pytest.param(
            [W1],
            [P1],
            attrs.evolve(holding("n1", [W1], [P1]), instance_id="i2", watches={}),
            [],
            [(k("w1", "p1", "app"), cid(1)), (k("w1", "p1", "sidecar"), cid(2))],
            id="fimd-restarted-empty-everything-recreated",
        ),
    ],
)
def test_node_calls(
    watchers: list[Watcher],
    pods: list[Pod],
    state: NodeState,
    destroyed: list[Key],
    created: list[tuple[Key, str]],
) -> None:
    assert calls(watchers, pods, state) == (destroyed, created)


def test_failed_watch_recreated_only_on_sweeps() -> None:
    state = holding("n1", [W1], [pod(uid="p1")], phase=fim_pb2.WATCH_PHASE_FAILED)
    assert calls([W1], [pod(uid="p1")], state) == ([], [])
    key = k("w1", "p1", "app")
    assert calls([W1], [pod(uid="p1")], state, retry_failed=True) == ([key], [(key, cid(1))])


def rejected(state: NodeState, key: Key, spec_hash: str, retry_in: timedelta) -> NodeState:
    rejection = Rejection(
        config_hash=spec_hash, code="FAILED_PRECONDITION", message="no pid", retry_at=NOW + retry_in
    )
    return state.applied(rejected={key: rejection})


def test_rejected_create_waits_for_backoff_or_spec_change() -> None:
    key = k("w1", "p1", "app")
    spec_hash = holding("n1", [W1], [pod(uid="p1")]).watches[key].config_hash
    waiting = rejected(EMPTY, key, spec_hash, timedelta(seconds=5))
    assert calls([W1], [pod(uid="p1")], waiting) == ([], [])
    expired = rejected(EMPTY, key, spec_hash, timedelta(seconds=-1))
    assert calls([W1], [pod(uid="p1")], expired) == ([], [(key, cid(1))])
    changed = [watcher(uid="w1", paths=("/srv",))]
    assert calls(changed, [pod(uid="p1")], waiting) == ([], [(key, cid(1))])


def test_calls_are_planned_per_node() -> None:
    pods = [pod(uid="p1", node="n1"), pod("web-1", uid="p2", node="n2")]
    n1 = plan_node(
        desired_for_node("n1", [W1], pods), holding("n1", [W1], pods), now=NOW, retry_failed=False
    )
    assert n1 == NodePlan()
    n2 = plan_node(
        desired_for_node("n2", [W1], pods),
        NodeState(node="n2", instance_id="j"),
        now=NOW,
        retry_failed=False,
    )
    assert [want.key for want in n2.create] == [k("w1", "p2", "app")]


@pytest.mark.parametrize(
    ("w", "nodes", "action"),
    [
        pytest.param(watcher(finalizer=False), {}, FinalizerAction.ADD, id="new-watcher-add"),
        pytest.param(watcher(), {}, FinalizerAction.NONE, id="live-watcher-has-it"),
        pytest.param(
            watcher(deleting=True),
            {"n1": NodeView(holding("n1", [W1], [P1]))},
            FinalizerAction.NONE,
            id="deleting-watches-remain-keep",
        ),
        pytest.param(
            watcher(deleting=True),
            {"n1": NodeView(EMPTY), "n2": NodeView(holding("n2", [W1], [P1]))},
            FinalizerAction.REMOVE,
            id="deleting-all-destroyed-remove",
        ),
        pytest.param(
            watcher(deleting=True),
            {"n1": NodeView(EMPTY), "n2": NodeView(None, "timeout")},
            FinalizerAction.NONE,
            id="deleting-node-unreachable-keep",
        ),
        pytest.param(
            watcher(deleting=True), {}, FinalizerAction.REMOVE, id="deleting-node-gone-remove"
        ),
        pytest.param(
            watcher(deleting=True),
            {"n1": NodeView(holding("n1", [watcher(uid="other")], [P1]), "refused")},
            FinalizerAction.REMOVE,
            id="deleting-unreachable-node-never-held-it-remove",
        ),
        pytest.param(
            watcher(deleting=True),
            {"n1": NodeView(holding("n1", [W1], [P1]), "refused")},
            FinalizerAction.NONE,
            id="deleting-unreachable-node-held-it-keep",
        ),
        pytest.param(
            watcher(deleting=True),
            {"n1": NodeView(holding("n1", [W1], [P1]), "refused", expired=True)},
            FinalizerAction.REMOVE,
            id="deleting-node-failing-beyond-grace-remove",
        ),
        pytest.param(
            watcher(deleting=True),
            {"n1": NodeView(EMPTY, "refused", maybe_holds=frozenset({"w1"}))},
            FinalizerAction.NONE,
            id="deleting-node-asked-to-hold-it-keep",
        ),
        pytest.param(
            watcher(deleting=True),
            {"n1": NodeView(None, "not contacted yet", expired=True)},
            FinalizerAction.REMOVE,
            id="deleting-never-read-node-beyond-grace-remove",
        ),
        pytest.param(
            watcher(deleting=True, finalizer=False), {}, FinalizerAction.NONE, id="already-removed"
        ),
    ],
)
def test_finalizer(w: Watcher, nodes: dict[str, NodeView], action: FinalizerAction) -> None:
    assert finalizer_action(w, nodes) is action


def test_a_rejection_is_retried_from_its_retry_time_on() -> None:
    key = k("w1", "p1", "app")
    spec_hash = holding("n1", [W1], [pod(uid="p1")]).watches[key].config_hash
    due_now = rejected(EMPTY, key, spec_hash, timedelta(0))
    assert calls([W1], [pod(uid="p1")], due_now) == ([], [(key, cid(1))])


def test_a_waiting_rejection_holds_back_only_its_own_watch() -> None:
    pods = [pod(uid="p1"), pod("web-1", uid="p2", containers={"app": 2})]
    first = k("w1", "p1", "app")
    spec_hash = holding("n1", [W1], pods).watches[first].config_hash
    waiting = rejected(EMPTY, first, spec_hash, timedelta(seconds=5))
    assert calls([W1], pods, waiting) == ([], [(k("w1", "p2", "app"), cid(2))])
