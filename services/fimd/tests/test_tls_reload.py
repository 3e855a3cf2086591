"""Certificate reload over real gRPC: fimd's mTLS server follows a Kubernetes-style Secret
update (symlink swap) to a certificate of a new CA without a restart, keeps serving the old
material when the new files are broken, and keeps requiring client certificates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fim.v1 import fim_pb2, fim_pb2_grpc
from services.fimd.server import build
from services.fimd.servicer import FimDaemonServicer
from services.fimd.tests.certs import Pki, SecretMount, make_pki
from services.fimd.tests.harness import Capture, FakeLauncher, FakeResolver, daemon_parts, wait_for
from services.fimd.tls import ReloadingCredentials, TlsError, TlsFiles


@pytest.fixture(scope="module")
def pki_a(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-a"))


@pytest.fixture(scope="module")
def pki_b(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-b"))


def _files(mount: SecretMount) -> TlsFiles:
    return TlsFiles(*(str(mount.path(name)) for name in SecretMount.FILES))


@pytest.fixture
def served(tmp_path: Path, pki_a: Pki) -> Iterator[tuple[SecretMount, int, Capture]]:
    """fimd's server on a Secret-style mount holding pki A's server certificate."""
    mount = SecretMount(tmp_path / "tls")
    mount.update_from(pki_a)
    with daemon_parts(FakeResolver(), FakeLauncher()) as (daemon, writer, capture, metrics):
        servicer = FimDaemonServicer(daemon, writer, metrics)
        server, port = build(servicer, "127.0.0.1:0", _files(mount), report=writer.op)
        yield mount, port, capture
        server.stop(0).wait()


def _call(port: int, trust: Pki, client: Pki | None) -> grpc.StatusCode:
    """One GetWatchState on a new connection trusting only `trust`'s CA, presenting
    `client`'s client certificate (none if None)."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=trust.ca.read_bytes(),
        private_key=client.client_key.read_bytes() if client else None,
        certificate_chain=client.client_cert.read_bytes() if client else None,
    )
    # A private subchannel pool: every call is a new TLS handshake.
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.secure_channel(f"localhost:{port}", creds, options) as channel:
        try:
            fim_pb2_grpc.FimDaemonStub(channel).GetWatchState(
                fim_pb2.GetWatchStateRequest(), timeout=5
            )
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def test_renewed_files_from_a_new_ca_are_served_without_restart(
    served: tuple[SecretMount, int, Capture], pki_a: Pki, pki_b: Pki
) -> None:
    mount, port, capture = served
    assert _call(port, pki_a, pki_a) == grpc.StatusCode.OK
    assert _call(port, pki_b, pki_b) == grpc.StatusCode.UNAVAILABLE

    mount.update_from(pki_b)  # CA B, fimd certificate B, client CA B

    assert _call(port, pki_b, pki_b) == grpc.StatusCode.OK
    # The old CA's client is no longer trusted, and A's clients no longer trust fimd.
    assert _call(port, pki_b, pki_a) == grpc.StatusCode.UNAVAILABLE
    assert _call(port, pki_a, pki_a) == grpc.StatusCode.UNAVAILABLE
    # Client authentication is still required after the reload.
    assert _call(port, pki_b, None) == grpc.StatusCode.UNAVAILABLE
    reloaded = wait_for(lambda: capture.ops("tls_reloaded"), what="tls_reloaded line")
    assert len(reloaded) == 1
    assert reloaded[0]["fingerprint"] != reloaded[0]["previous"]
    assert not capture.ops("tls_reload_failed")


@pytest.mark.parametrize("broken", ["garbage_key", "key_of_other_cert", "garbage_ca"])
def test_broken_files_keep_the_old_material_serving(
    served: tuple[SecretMount, int, Capture], pki_a: Pki, pki_b: Pki, broken: str
) -> None:
    mount, port, capture = served
    cert, key, ca = (pki_b.server_cert, pki_b.server_key, pki_b.ca)
    key_bytes, ca_bytes = key.read_bytes(), ca.read_bytes()
    if broken == "garbage_key":
        key_bytes = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    elif broken == "key_of_other_cert":
        key_bytes = pki_a.server_key.read_bytes()
    else:
        ca_bytes = b"not a certificate\n"
    mount.update(cert.read_bytes(), key_bytes, ca_bytes)

    for _ in range(3):  # several handshakes: still A, reported once
        assert _call(port, pki_a, pki_a) == grpc.StatusCode.OK
    assert _call(port, pki_b, pki_b) == grpc.StatusCode.UNAVAILABLE
    assert _call(port, pki_a, None) == grpc.StatusCode.UNAVAILABLE
    failed = wait_for(lambda: capture.ops("tls_reload_failed"), what="tls_reload_failed line")
    assert len(failed) == 1
    assert failed[0]["level"] == "error"
    assert "still serving certificate" in failed[0]["detail"]
    assert not capture.ops("tls_reloaded")

    mount.update_from(pki_b)  # repaired: picked up on the next handshake
    assert _call(port, pki_b, pki_b) == grpc.StatusCode.OK
    wait_for(lambda: capture.ops("tls_reloaded"), what="tls_reloaded line")


def test_unchanged_or_identical_files_are_not_reloaded(tmp_path: Path, pki_a: Pki) -> None:
    mount = SecretMount(tmp_path / "tls")
    mount.update_from(pki_a)
    lines: list[str] = []

    def record(msg: str, level: str = "info", /, **fields: object) -> None:
        lines.append(msg)

    creds = ReloadingCredentials(_files(mount), record)
    assert creds.fetch() is None  # nothing changed
    mount.update_from(pki_a)  # a swap to the same bytes
    assert creds.fetch() is None
    assert lines == []


def test_invalid_files_at_start_are_an_error(tmp_path: Path, pki_a: Pki) -> None:
    mount = SecretMount(tmp_path / "tls")
    mount.update(pki_a.server_cert.read_bytes(), pki_a.client_key.read_bytes(), b"")
    with pytest.raises(TlsError, match=r"tls\.key"):
        ReloadingCredentials(_files(mount))
    with pytest.raises(TlsError, match="cannot read"):
        ReloadingCredentials(TlsFiles(str(tmp_path / "none"), "x", "y"))
