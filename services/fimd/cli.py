"""Command line of fimd: parse flags, wire the adapters, serve until SIGTERM/SIGINT.

    python -m services.fimd --node-name N --listen 127.0.0.1:7443 \\
        --tls-cert server.pem --tls-key server.key --client-ca ca.pem \\
        [--health-listen 0.0.0.0:7444] [--metrics-listen 127.0.0.1:9464] \\
        [--fimnotify-cmd "python -m services.fimnotify"] \\
        [--proc-root /proc] [--mqueue-dir /dev/mqueue] [--queue-prefix /fimk8s.]

`--insecure` instead of the three TLS flags serves plaintext gRPC for local development,
with a loud warning on stderr and as an operational line. The TLS files are re-read when they
change (a renewed Secret needs no restart; see server.py). `--health-listen` adds a
plaintext port serving only grpc.health.v1, for the kubelet's gRPC probes. On SIGTERM fimd
reports NOT_SERVING, stops accepting calls, stops every fimnotify child, removes their
queues, flushes stdout and exits 0. Unusable TLS files at start: exit status 1.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
import types

from services.fimd import queues
from services.fimd.daemon import Daemon
from services.fimd.metrics import Metrics
from services.fimd.output import LineWriter
from services.fimd.resolver import ProcResolver
from services.fimd.server import build, build_health, new_health
from services.fimd.servicer import FimDaemonServicer
from services.fimd.spawner import ProcessSpawner
from services.fimd.tls import TlsError, TlsFiles
from libs.fimnotify_api import wire

INSECURE_WARNING = (
    "WARNING: --insecure: gRPC without TLS or client authentication. Anyone who can reach "
    "this port can make this privileged daemon watch any container. Development only."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fimd", description=__doc__.split("\n")[0])
    parser.add_argument("--node-name", required=True, help="Kubernetes node name")
    parser.add_argument("--listen", default="127.0.0.1:7443", help="gRPC host:port")
    parser.add_argument("--tls-cert", help="server certificate (PEM)")
    parser.add_argument("--tls-key", help="server private key (PEM)")
    parser.add_argument("--client-ca", help="CA that signs client certificates (PEM)")
    parser.add_argument("--insecure", action="store_true", help="no TLS (development only)")
    parser.add_argument(
        "--health-listen", help="host:port of a plaintext, grpc.health.v1-only listener"
    )
    parser.add_argument("--metrics-listen", help="host:port of the Prometheus endpoint")
    parser.add_argument(
        "--fimnotify-cmd",
        default=f"{shlex.quote(sys.executable)} -m services.fimnotify",
        help="command that starts one fimnotify process (shell-style quoting)",
    )
    parser.add_argument("--proc-root", default="/proc", help="the host's procfs")
    parser.add_argument("--mqueue-dir", default="/dev/mqueue", help="mqueue filesystem")
    parser.add_argument("--queue-prefix", default=queues.DEFAULT_PREFIX, help="queue names")
    geometry = queues.DEFAULT_GEOMETRY
    parser.add_argument(
        "--queue-messages", type=int, default=geometry.max_messages, help="messages per queue"
    )
    parser.add_argument(
        "--queue-message-size", type=int, default=geometry.message_size, help="bytes"
    )
    parser.add_argument(
        "--msgqueue-limit",
        type=int,
        default=64 << 20,
        help="RLIMIT_MSGQUEUE to ask for (needs CAP_SYS_RESOURCE beyond the hard limit)",
    )
    args = parser.parse_args(argv)
    tls = (args.tls_cert, args.tls_key, args.client_ca)
    if args.insecure and any(tls):
        parser.error("--insecure excludes --tls-cert/--tls-key/--client-ca")
    if not args.insecure and not all(tls):
        parser.error("--tls-cert, --tls-key and --client-ca are required (or --insecure)")
    if args.queue_messages < 1 or args.queue_message_size < wire.MIN_MESSAGE_SIZE:
        parser.error(f"queues need >= 1 message of >= {wire.MIN_MESSAGE_SIZE} bytes")
    if not args.queue_prefix.startswith("/") or "/" in args.queue_prefix[1:]:
        parser.error("--queue-prefix must look like /name.")
    return args


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    metrics = Metrics()
    writer = LineWriter(sys.stdout.fileno(), args.node_name)
    geometry = queues.Geometry(args.queue_messages, args.queue_message_size)
    limit = queues.raise_limit(args.msgqueue_limit)
    daemon = Daemon(
        args.node_name,
        ProcResolver(args.proc_root),
        ProcessSpawner(shlex.split(args.fimnotify_cmd)),
        writer,
        metrics,
        proc_root=args.proc_root,
        queue_prefix=args.queue_prefix,
        queue_geometry=geometry,
    )
    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr, flush=True)
        writer.op("insecure", "warning", detail=INSECURE_WARNING)
    daemon.remove_stale_queues(args.mqueue_dir)
    tls = None if args.insecure else TlsFiles(args.tls_cert, args.tls_key, args.client_ca)
    health = new_health()
    try:
        server, port = build(
            FimDaemonServicer(daemon, writer, metrics),
            args.listen,
            tls,
            health_servicer=health,
            report=writer.op,
        )
    except TlsError as err:
        print(f"fimd: {err}", file=sys.stderr, flush=True)
        writer.op("tls_invalid", "error", detail=str(err))
        writer.close()
        return 1
    servers = [server]
    health_port = 0
    if args.health_listen:
        health_server, health_port = build_health(args.health_listen, health)
        servers.append(health_server)
    if args.metrics_listen:
        metrics.serve(*_host_port(args.metrics_listen))
    loop = threading.Thread(target=daemon.run, name="fimd-io")
    loop.start()
    writer.op(
        "started",
        instance=daemon.instance_id,
        port=port,
        tls=tls is not None,
        health_port=health_port,
        msgqueue_limit=limit,
        # Queues (watches, plus one per watch being updated) that fit: a node-wide budget.
        queue_capacity=limit // geometry.kernel_bytes(),
    )

    stop = threading.Event()

    def on_signal(signum: int, _frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    health.enter_graceful_shutdown()
    for stopped in [s.stop(grace=2) for s in servers]:
        stopped.wait()
    daemon.shutdown()
    loop.join()
    daemon.stop_children()
    writer.op("stopped", instance=daemon.instance_id)
    writer.close()
    return 0
