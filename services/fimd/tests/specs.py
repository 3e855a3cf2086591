"""WatchSpec builders shared by the fimd tests."""

from __future__ import annotations

from fim.v1 import fim_pb2

CONTAINER = "containerd://" + "ab" * 32


def spec(
    *,
    paths: tuple[str, ...] = ("/data",),
    events: tuple[str, ...] = ("create", "modify"),
    container_id: str = CONTAINER,
    log_format: str = "",
    tags: dict[str, str] | None = None,
    container: str = "app",
    pod_uid: str = "pod-uid-1",
    watcher_uid: str = "watcher-uid-1",
    recursive: bool = False,
) -> fim_pb2.WatchSpec:
    return fim_pb2.WatchSpec(
        key=fim_pb2.WatchKey(watcher_uid=watcher_uid, pod_uid=pod_uid, container_name=container),
        identity=fim_pb2.Identity(
            watcher_namespace="shop",
            watcher_name="myapp-logs",
            pod_namespace="shop",
            pod_name="web-0",
        ),
        container_id=container_id,
        subjects=[
            fim_pb2.Subject(
                paths=list(paths), events=list(events), tags=tags or {}, recursive=recursive
            )
        ],
        log_format=log_format,
    )
