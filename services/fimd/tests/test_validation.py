from collections.abc import Callable

import pytest

from fim.v1 import fim_pb2
from services.fimd.daemon import accept
from services.fimd.tests.specs import spec
from services.fimd.validation import ValidationError


def test_valid_spec_is_accepted_with_its_template() -> None:
    entry = accept(fim_pb2.CreateWatchRequest(spec=spec(log_format="{event} {path}")), "n1")
    assert entry.template is not None
    assert entry.identity.watcher == "shop/myapp-logs"
    assert entry.subjects[0].paths == ("/data",)


def _mutate(change: Callable[[fim_pb2.WatchSpec], object]) -> fim_pb2.WatchSpec:
    watch = spec()
    change(watch)
    return watch


@pytest.mark.parametrize(
    ("watch", "message"),
    [
        (spec(paths=("data",)), "spec.subjects[0].paths[0]: 'data' is not an absolute path"),
        (spec(paths=("/a/../etc",)), "spec.subjects[0].paths[0]: '/a/../etc' contains a '..'"),
        (spec(paths=("/" + "a" * 4096,)), "spec.subjects[0].paths[0]: is 4097 bytes, at most"),
        (spec(paths=tuple(f"/{i}" for i in range(65))), "spec.subjects[0].paths: has 65"),
        (spec(paths=()), "spec.subjects[0].paths: at least one path"),
        (spec(events=("modify", "write")), "spec.subjects[0].events[1]: unknown event name"),
        (spec(events=()), "spec.subjects[0].events: at least one event name"),
        (spec(log_format="{event} {bogus}"), "spec.log_format: unknown placeholder {bogus}"),
        (spec(log_format="é" * 1025), "spec.log_format: is 1025 characters, at most 1024"),
        (spec(container_id="containerd://abc"), "spec.container_id: container id must be 64"),
        (spec(container_id="rkt://" + "a" * 64), "spec.container_id:"),
        (spec(container_id=""), "spec.container_id: is required"),
        (spec(container=""), "spec.key.container_name: is required"),
        (spec(tags={f"k{i}": "v" for i in range(33)}), "spec.subjects[0].tags: has 33"),
        (spec(tags={"k": "v" * 1025}), "spec.subjects[0].tags['k']: is 1025 bytes"),
        (_mutate(lambda w: w.ClearField("subjects")), "spec.subjects: at least one subject"),
        (_mutate(lambda w: w.subjects.extend([w.subjects[0]] * 32)), "spec.subjects: has 33"),
        (_mutate(lambda w: w.subjects[0].ignore.append("a/b")), "ignore[0]: a pattern matches"),
        (_mutate(lambda w: setattr(w.subjects[0], "max_depth", 5000)), "max_depth: must be"),
        (_mutate(lambda w: w.identity.ClearField("pod_name")), "spec.identity.pod_name: is"),
        (spec(paths=("/a\x00b",)), "spec.subjects[0].paths[0]: contains a NUL"),
    ],
)
def test_invalid_spec_is_rejected_naming_the_field(watch: fim_pb2.WatchSpec, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        accept(fim_pb2.CreateWatchRequest(spec=watch), "n1")
    assert message in str(err.value)


def test_config_hash_mismatch_is_rejected() -> None:
    request = fim_pb2.CreateWatchRequest(spec=spec(), config_hash="0" * 64)
    with pytest.raises(ValidationError, match=r"config_hash: '0+' does not match"):
        accept(request, "n1")
