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
        (spec(paths=("data",)), "spec.subjects[0].paths[0]: must be an absolute path, got 'data'"),
        (spec(paths=("/a/../etc",)), "spec.subjects[0].paths[0]: must be normalized"),
        (spec(paths=("/data/",)), "spec.subjects[0].paths[0]: must be normalized"),
        (spec(paths=("/a", "/a")), "spec.subjects[0].paths[1]: duplicate path '/a'"),
        (spec(paths=("/" + "a" * 4096,)), "spec.subjects[0].paths[0]: is 4097 bytes, at most"),
        (
            spec(paths=tuple(f"/{i}" for i in range(65))),
            "spec.subjects[0].paths: must have at most 64",
        ),
        (spec(paths=()), "spec.subjects[0].paths: must have at least 1"),
        (spec(events=("modify", "write")), "spec.subjects[0].events[1]: unknown event name"),
        (spec(events=()), "spec.subjects[0].events: must have at least 1"),
        (spec(log_format="{event} {bogus}"), "spec.log_format: unknown placeholder {bogus}"),
        (spec(log_format="é" * 1025), "spec.log_format: is 1025 characters, at most 1024"),
        (spec(container_id="containerd://abc"), "spec.container_id: container id must be 64"),
        (spec(container_id="rkt://" + "a" * 64), "spec.container_id:"),
        (spec(container_id=""), "spec.container_id: is required"),
        (spec(container=""), "spec.key.container_name: is required"),
        (
            spec(tags={f"k{i}": "v" for i in range(33)}),
            "spec.subjects[0].tags: must have at most 32",
        ),
        (spec(tags={"k": "v" * 1025}), "spec.subjects[0].tags['k']: is 1025 bytes"),
        (_mutate(lambda w: w.ClearField("subjects")), "spec.subjects: at least one subject"),
        (_mutate(lambda w: w.subjects.extend([w.subjects[0]] * 32)), "spec.subjects: has 33"),
        (spec(tags={"": "v"}), "spec.subjects[0].tags: a tag key must not be empty"),
        (_mutate(lambda w: w.subjects[0].ignore.append("a/b")), "ignore[0]: must not contain '/'"),
        (_mutate(lambda w: w.subjects[0].ignore.append("")), "ignore[0]: must not be empty"),
        (
            _mutate(lambda w: setattr(w.subjects[0], "max_depth", 5000)),
            "spec.subjects[0].maxDepth: must be between 0 and 128",
        ),
        (
            _mutate(lambda w: setattr(w.subjects[0], "max_depth", 3)),
            "spec.subjects[0].maxDepth: requires recursive: true",
        ),
        (_mutate(lambda w: w.identity.ClearField("pod_name")), "spec.identity.pod_name: is"),
        (spec(paths=("/a\x00b",)), "spec.subjects[0].paths[0]: must not contain NUL"),
        (
            _mutate(lambda w: setattr(w.subjects[0], "hash", "md5")),
            "spec.subjects[0].hash: unknown hash 'md5'; expected one of: sha256",
        ),
        (
            _mutate(lambda w: setattr(w.subjects[0], "hash", "x" * 17)),
            "spec.subjects[0].hash: is 17 bytes, at most 16 allowed",
        ),
        (
            _mutate(lambda w: setattr(w, "scan_interval_s", 59)),
            "spec.scan_interval_s: must be at least 1m",
        ),
        (
            _mutate(lambda w: setattr(w, "scan_interval_s", 31622401)),
            "spec.scan_interval_s: must be at least 1m and at most 366 days",
        ),
        (
            _mutate(
                lambda w: w.subjects[0].MergeFrom(fim_pb2.Subject(hash="sha256", coalesce_ms=9))
            ),
            "spec.subjects[0].hash: cannot be combined with coalesce",
        ),
        (
            _mutate(
                lambda w: w.subjects[0].MergeFrom(fim_pb2.Subject(attributes=True, coalesce_ms=9))
            ),
            "spec.subjects[0].attributes: cannot be combined with coalesce",
        ),
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
