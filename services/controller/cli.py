"""`python -m services.controller`: flags, wiring, leader election, signal handling."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path

from services.controller import logs
from services.controller.controller import Controller, Settings
from services.controller.events import EventRecorder
from services.controller.fimd_client import FimdPool, Tls
from services.controller.kube import Kube
from services.controller.leader import LeaderElector, LeaseConfig
from services.controller.metrics import Metrics, serve

log = logging.getLogger("services.controller")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fim-controller", description=__doc__)
    p.add_argument("--kubeconfig", help="kubeconfig file; default: in-cluster, else $KUBECONFIG")
    p.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE", "fim-system"),
        help="namespace of the controller's Lease and of the fimd pods (default: $POD_NAMESPACE)",
    )
    p.add_argument("--fimd-selector", default="app.kubernetes.io/name=fimd")
    p.add_argument("--fimd-port-name", default="grpc", help="named container port of fimd")
    p.add_argument(
        "--fimd-address",
        choices=("pod", "host"),
        default="pod",
        help="reach fimd on its pod IP or its node's host IP (hostNetwork)",
    )
    p.add_argument("--fimd-ca", type=Path, help="CA bundle that signed fimd's certificates")
    p.add_argument("--fimd-cert", type=Path, help="controller client certificate (PEM)")
    p.add_argument("--fimd-key", type=Path, help="controller client key (PEM)")
    p.add_argument("--fimd-server-name", default="", help="name fimd certificates carry")
    p.add_argument("--insecure", action="store_true", help="plaintext gRPC: local development only")
    p.add_argument("--call-timeout", type=float, default=5.0, help="deadline of each fimd call (s)")
    p.add_argument("--resync-period", type=float, default=60.0, help="GetWatchState sweep (s)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument(
        "--max-sync-seconds",
        type=float,
        default=300.0,
        help="a sync running longer is a stuck worker: /healthz fails (s)",
    )
    p.add_argument(
        "--node-grace-period",
        type=float,
        default=120.0,
        help="a node whose fimd has failed this long no longer blocks FimWatcher deletions (s)",
    )
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--lease-name", default="fim-controller")
    p.add_argument("--lease-duration", type=float, default=8.0)
    p.add_argument("--renew-deadline", type=float, default=6.0)
    p.add_argument("--retry-period", type=float, default=1.5)
    p.add_argument("--identity", default=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}")
    p.add_argument("--http-address", default="0.0.0.0:8080", help="/metrics /healthz /readyz")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    if not args.insecure and not (args.fimd_ca and args.fimd_cert and args.fimd_key):
        p.error("fimd needs mTLS: give --fimd-ca, --fimd-cert and --fimd-key (or --insecure)")
    if args.leader_elect and not (
        0 < args.retry_period < args.renew_deadline < args.lease_duration
        and args.call_timeout + args.retry_period < args.lease_duration
    ):
        # Renewals every retry period leave at least lease - retry seconds of lease: an
        # action (its deadline: --call-timeout) must fit in that, or the fence never opens.
        p.error(
            "leader election needs retry-period < renew-deadline < lease-duration and"
            " call-timeout + retry-period < lease-duration"
        )
    return args


def _tls_loader(args: argparse.Namespace) -> Callable[[], Tls] | None:
    """Reads the mounted certificate files; called again on every sweep (rotation)."""
    if args.insecure:
        return None

    def load() -> Tls:
        return Tls(
            ca=args.fimd_ca.read_bytes(),
            cert=args.fimd_cert.read_bytes(),
            key=args.fimd_key.read_bytes(),
            server_name=args.fimd_server_name,
        )

    return load


def serve_probes(
    controller: Controller, metrics: Metrics, address: tuple[str, int]
) -> ThreadingHTTPServer:
    """/metrics, and /healthz and /readyz answered by the controller itself."""
    return serve(metrics, address, healthy=controller.health, ready=controller.readiness)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _elector(kube: Kube, args: argparse.Namespace) -> LeaderElector:
    lease = LeaseConfig(
        namespace=args.namespace,
        name=args.lease_name,
        identity=args.identity,
        lease_seconds=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_seconds=args.retry_period,
    )
    return LeaderElector(kube, lease)


def _lead(
    elector: LeaderElector,
    controller: Controller,
    metrics: Metrics,
    stop: threading.Event,
) -> int:
    """Reconciles while leading; 1 if leadership was lost (the pod restarts), else 0.

    The lease is renewed from the moment it is won, in its own thread; the workers start
    once the caches are synced, and every action they take is fenced by the lease.
    """
    if not elector.acquire(stop):
        return 0
    metrics.leader.set(1)
    lost = threading.Event()

    def hold() -> None:
        # Renewing starts at once: waiting for the caches must not let the lease lapse.
        if elector.hold(stop):
            lost.set()
        stop.set()

    renewer = threading.Thread(target=hold, name="lease", daemon=True)
    renewer.start()
    controller.start_workers(stop)
    stop.wait()
    renewer.join()
    metrics.leader.set(0)
    controller.shut_down()
    if not lost.is_set():
        elector.release()
    return 1 if lost.is_set() else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    kube = Kube.connect(args.kubeconfig, user_agent=f"fim-controller/{args.identity}")
    metrics = Metrics()
    settings = Settings(
        namespace=args.namespace,
        fimd_selector=args.fimd_selector,
        fimd_port_name=args.fimd_port_name,
        fimd_use_host_ip=args.fimd_address == "host",
        resync_seconds=args.resync_period,
        workers=args.workers,
        max_sync_seconds=args.max_sync_seconds,
        node_grace=timedelta(seconds=args.node_grace_period),
        action_seconds=args.call_timeout,
    )
    agent = f"fim-controller/{args.identity}"
    pool = FimdPool(_tls_loader(args), deadline=args.call_timeout, user_agent=agent)
    events = EventRecorder(kube, metrics, instance=args.identity, timeout=args.call_timeout)
    elector = _elector(kube, args) if args.leader_elect else None
    controller = Controller(kube, pool, settings, metrics, events, fence=elector)
    server = serve_probes(controller, metrics, _address(args.http_address))
    log.info("starting", extra={"identity": args.identity, "http": server.server_address})
    controller.start_informers(stop)
    if elector is not None:
        return _lead(elector, controller, metrics, stop)
    controller.start_workers(stop)
    stop.wait()
    controller.shut_down()
    return 0
