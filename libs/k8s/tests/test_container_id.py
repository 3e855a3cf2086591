from libs.k8s.container_id import hello


def test_hello() -> None:
    assert hello() == "hi"
