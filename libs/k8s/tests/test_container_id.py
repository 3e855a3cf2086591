"""containerID parsing: the three runtimes, round trips, cgroup names and malformed input."""

from __future__ import annotations

import pytest

from libs.k8s.container_id import ContainerId, ContainerIdError, Runtime, parse_container_id
from libs.k8s.errors import ModelError

ID = "3f4e6c1b2a0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"


@pytest.mark.parametrize(
    ("text", "runtime"),
    [
        (f"containerd://{ID}", Runtime.CONTAINERD),
        (f"cri-o://{ID}", Runtime.CRIO),
        (f"docker://{ID}", Runtime.DOCKER),
    ],
)
def test_parses_each_runtime_and_round_trips(text: str, runtime: Runtime) -> None:
    parsed = parse_container_id(text)
    assert parsed == ContainerId(runtime, ID)
    assert parsed.id == ID
    assert str(parsed) == text
    assert parse_container_id(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("runtime", "names"),
    [
        (Runtime.CONTAINERD, (ID, f"cri-containerd-{ID}.scope")),
        (Runtime.CRIO, (f"crio-{ID}", f"crio-{ID}.scope")),
        (Runtime.DOCKER, (ID, f"docker-{ID}.scope")),
    ],
)
def test_cgroup_leaf_names_cover_both_cgroup_drivers(
    runtime: Runtime, names: tuple[str, ...]
) -> None:
    assert ContainerId(runtime, ID).cgroup_leaf_names() == names


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "containerID must be a string, got NoneType"),
        (42, "containerID must be a string, got int"),
        ([f"containerd://{ID}"], "containerID must be a string, got list"),
        ("", "containerID is empty"),
        (ID, "must look like '<runtime>://<id>'"),
        (f"containerd:{ID}", "must look like '<runtime>://<id>'"),
        (f"containerd//{ID}", "must look like '<runtime>://<id>'"),
        (f"rkt://{ID}", "unknown container runtime 'rkt'"),
        (f"CONTAINERD://{ID}", "unknown container runtime 'CONTAINERD'"),
        (f"crio://{ID}", "expected one of: containerd, cri-o, docker"),
        (f"://{ID}", "unknown container runtime ''"),
        ("containerd://", "must be 64 hex characters, got 0"),
        ("containerd://3f4e6c1b2a0d", "must be 64 hex characters, got 12"),
        (f"containerd://{ID}0", "must be 64 hex characters, got 65"),
        (f"containerd://{ID.upper()}", "must be lowercase hex"),
        (f"containerd://{ID[:-1]}g", "must be lowercase hex"),
        (f"containerd://{ID[:-1]}\n", "must be lowercase hex"),
        (f"containerd://sha256:{ID[:57]}", "must be lowercase hex"),
        (f"docker://{ID[:-2]}//", "must be lowercase hex"),
    ],
)
def test_rejects_malformed_input(value: object, message: str) -> None:
    with pytest.raises(ContainerIdError, match=message.replace("(", r"\(")):
        parse_container_id(value)


def test_constructor_validates_the_id_too() -> None:
    with pytest.raises(ContainerIdError, match="must be 64 hex characters"):
        ContainerId(Runtime.DOCKER, "abc")


def test_error_is_a_model_error_and_a_value_error() -> None:
    with pytest.raises(ModelError) as caught:
        parse_container_id("bogus")
    assert isinstance(caught.value, ValueError)


def test_is_immutable_and_hashable() -> None:
    parsed = parse_container_id(f"cri-o://{ID}")
    with pytest.raises(AttributeError):
        parsed.id = ID  # type: ignore[misc]
    assert {parsed, parse_container_id(f"cri-o://{ID}")} == {parsed}
