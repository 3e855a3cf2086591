"""Command line of fimd: parse flags, wire the adapters, serve until SIGTERM/SIGINT.

    python -m services.fimd --node-name N --listen 127.0.0.1:7443 \\
        --tls-cert server.pem --tls-key server.key --client-ca ca.pem \\
        [--health-listen 0.0.0.0:7444] [--metrics-listen 127.0.0.1:9464] \\
        [--fimnotify-cmd "python -m services.fimnotify"] [--engines N] [--max-dirs 10000] \\
        [--max-watches 4000] [--inotify-watch-budget N] [--memory-budget 900Mi] \\
        [--line-budget 0] [--proc-root /proc] [--mqueue-dir /dev/mqueue] \\
        [--queue-prefix /fimk8s.] [--hash-max-bytes 64Mi] [--hash-workers 2] \\
        [--hash-backlog 10000] [--audit-key /etc/fim/audit/keys.json] [--heartbeat-interval 60] \\
        [--baseline-db /var/lib/fim-k8s/baselines.sqlite] [--baseline-max-entries 200000] \\
        [--baseline-orphan-grace 3600]

fimd runs `--engines` fimnotify engine processes (default min(CPUs, 4)), each with one
inotify instance and one message queue, and spreads the watches over them (engines.py).
It admits a watch only within its budgets (budget.py): `--max-watches`, inotify watches
(`--inotify-watch-budget`, default half of fs.inotify.max_user_watches) and memory
(`--memory-budget`, default the memory limit of its cgroup); beyond them CreateWatch fails
with RESOURCE_EXHAUSTED. The `started` operational line reports the engines and budgets.
`--line-budget` is the event lines per second of a watch whose FimWatcher sets no
`lineBudget` (0, the default: none); beyond it a second's remaining lines are summarised
(volume.py, docs/logging.md).
Subjects with `attributes` or `hash` have their files read by `--hash-workers` threads
(hashing.py), at most `--hash-backlog` files waiting; a file over `--hash-max-bytes` is not
hashed (`hashSkipped`). `--baseline-db` (default none: no baselines) is the node's SQLite
file of baselines of those subjects, compared on every (re)activation (scanner.py).

Every line is sealed for the tamper-evident stream (services/fimd/audit.py, libs/auditstream)
with this node's key from `--audit-key` (the key ring of the Secret fim-audit-key, re-read
when it changes), and a heartbeat line is written every `--heartbeat-interval` seconds.
Without `--audit-key` lines are unsealed (`audit_unsealed` warning).

`--insecure` instead of the three TLS flags serves plaintext gRPC for local development,
with a loud warning on stderr and as an operational line. The TLS files are re-read when they
change (a renewed Secret needs no restart; see server.py). `--health-listen` adds a
plaintext port serving only grpc.health.v1, for the kubelet's gRPC probes. On SIGTERM fimd
reports NOT_SERVING, stops accepting calls, stops its engines, removes their queues,
flushes stdout and exits 0. Unusable TLS files at start: exit status 1.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import types

from libs.fimnotify_api import control, wire
from libs.k8s.errors import ModelError
from libs.k8s.model import check_line_budget
from libs.rootfs.reader import DEFAULT_MAX_HASH_BYTES
from libs.rootfs.walk import DEFAULT_MAX_ENTRIES
from services.fimd import budget, hashing, queues
from services.fimd.audit import AuditStream, KeyFile
from services.fimd.baseline_report import BaselineEndpoint
from services.fimd.capacity import CgroupMemory, MemoryReading, inotify_limits
from services.fimd.daemon import Daemon
from services.fimd.engines import ProcessLauncher
from services.fimd.metrics import Metrics
from services.fimd.output import LineWriter
from services.fimd.resolver import ProcResolver
from services.fimd.scanner import DEFAULT_ORPHAN_GRACE, Scanner
from services.fimd.server import build, build_health, new_health
from services.fimd.servicer import FimDaemonServicer
from services.fimd.tls import TlsError, TlsFiles

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
        help="command that starts one fimnotify engine (shell-style quoting); fimd adds the "
        "engine's flags (--queue, --proc-root, --max-dirs, ...)",
    )
    parser.add_argument(
        "--engines",
        type=int,
        default=min(os.cpu_count() or 1, 4),
        help="fimnotify engine processes, each with one inotify instance and one queue",
    )
    parser.add_argument(
        "--max-dirs",
        type=int,
        default=control.DEFAULT_MAX_DIRS,
        help="directories one watch may hold; the rest is reported (watch_limited), not watched",
    )
    parser.add_argument(
        "--max-watches",
        type=int,
        default=budget.DEFAULT_MAX_WATCHES,
        help="watches fimd admits; beyond, CreateWatch fails with RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--inotify-watch-budget",
        type=int,
        help="inotify watches fimd's engines may hold before CreateWatch is refused "
        "(default: half of fs.inotify.max_user_watches; 0: no budget)",
    )
    parser.add_argument(
        "--memory-budget",
        type=_byte_count,
        help="bytes (e.g. 900Mi) fimd and its engines may use; new watches are refused "
        f"beyond {round(budget.DEFAULT_MEMORY_FRACTION * 100)}%% of it (default: the cgroup's "
        "memory limit)",
    )
    parser.add_argument(
        "--line-budget",
        type=_line_budget,
        default=0,
        help="event lines per second a watch may write before the rest of that second is "
        "one summary line, for watches whose FimWatcher sets no lineBudget (0: no budget)",
    )
    _file_flags(parser)
    parser.add_argument(
        "--audit-key",
        help="key ring (keys.json of the Secret fim-audit-key) that seals every line; "
        "without it lines are unsealed",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=60.0,
        help="seconds between heartbeat lines (the counts since the previous one)",
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
    if not 1 <= args.heartbeat_interval <= 3600:
        parser.error("--heartbeat-interval must be 1..3600 seconds")
    if args.engines < 1 or args.max_dirs < 1 or args.max_watches < 0:
        parser.error("--engines and --max-dirs must be >= 1, --max-watches >= 0")
    if args.baseline_max_entries < 1 or args.baseline_orphan_grace < 0:
        parser.error("--baseline-max-entries must be >= 1, --baseline-orphan-grace >= 0")
    if args.hash_workers < 1 or args.hash_backlog < 1:
        parser.error("--hash-workers and --hash-backlog must be >= 1")
    if args.inotify_watch_budget is not None and args.inotify_watch_budget < 0:
        parser.error("--inotify-watch-budget must be >= 0")
    if args.queue_messages < 1 or args.queue_message_size < wire.MIN_MESSAGE_SIZE:
        parser.error(f"queues need >= 1 message of >= {wire.MIN_MESSAGE_SIZE} bytes")
    if not args.queue_prefix.startswith("/") or "/" in args.queue_prefix[1:]:
        parser.error("--queue-prefix must look like /name.")
    return args


def _file_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of file attributes, hashes and baselines."""
    parser.add_argument(
        "--hash-max-bytes",
        type=_byte_count,
        default=DEFAULT_MAX_HASH_BYTES,
        help="files larger than this (e.g. 64Mi, the default) are not hashed: hashSkipped",
    )
    parser.add_argument(
        "--hash-workers", type=int, default=hashing.DEFAULT_WORKERS, help="hashing threads"
    )
    parser.add_argument(
        "--hash-backlog",
        type=int,
        default=hashing.DEFAULT_BACKLOG,
        help="files waiting to be hashed beyond which an event's file is not read "
        "(hashSkipped, counted in fimd_hash_skipped_total)",
    )
    parser.add_argument(
        "--baseline-db",
        default="",
        help="the node's baseline database (SQLite, on a hostPath so it outlives the pod); "
        "empty: no baselines",
    )
    parser.add_argument(
        "--baseline-max-entries",
        type=int,
        default=DEFAULT_MAX_ENTRIES,
        help="entries one subject's baseline holds at most (the walk stops: truncated)",
    )
    parser.add_argument(
        "--baseline-orphan-grace",
        type=float,
        default=DEFAULT_ORPHAN_GRACE,
        help="seconds after which a baseline no watch uses any more is removed",
    )


def _byte_count(text: str) -> int:
    try:
        return budget.parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def budgets(
    args: argparse.Namespace, cgroup: CgroupMemory | None, reading: MemoryReading | None
) -> budget.Budgets:
    """The budgets from the flags, else from the node's sysctls and fimd's cgroup."""
    if args.inotify_watch_budget is not None:
        inotify, inotify_source = args.inotify_watch_budget, "--inotify-watch-budget"
    else:
        max_user_watches = inotify_limits(args.proc_root).max_user_watches
        inotify = max_user_watches // 2
        inotify_source = f"half of fs.inotify.max_user_watches {max_user_watches}"
    memory: int | None = args.memory_budget
    memory_source = "--memory-budget"
    if memory is None and reading is not None and reading.limit is not None:
        assert cgroup is not None
        memory, memory_source = reading.limit, f"memory limit of cgroup {cgroup.directory}"
    return budget.Budgets(
        max_watches=args.max_watches,
        inotify_watches=inotify,
        inotify_watches_source=inotify_source,
        memory_bytes=memory,
        memory_source=memory_source,
    )


def _scanner(args: argparse.Namespace, writer: LineWriter, metrics: Metrics) -> Scanner | None:
    if not args.baseline_db:
        return None
    return Scanner(
        args.baseline_db,
        writer,
        metrics,
        proc_root=args.proc_root,
        max_bytes=args.hash_max_bytes,
        max_entries=args.baseline_max_entries,
        orphan_grace=args.baseline_orphan_grace,
    )


def _line_budget(value: str) -> int:
    budget = int(value)
    try:
        check_line_budget(budget)
    except ModelError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return budget


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def audit(args: argparse.Namespace, metrics: Metrics) -> AuditStream:
    """The sealing and heartbeats of the writer, reporting into `metrics`."""

    def beat(when: float, sealed: bool) -> None:
        metrics.audit_heartbeat.set(when)
        metrics.audit_sealed.set(1 if sealed else 0)

    key_file = None
    if args.audit_key:
        key_file = KeyFile(args.audit_key, args.node_name, on_error=metrics.audit_key_errors.inc)
    return AuditStream(
        args.node_name, key_file, interval=args.heartbeat_interval, on_heartbeat=beat
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    metrics = Metrics()
    writer = LineWriter(
        sys.stdout.fileno(), args.node_name, on_drop=metrics.output_drop, audit=audit(args, metrics)
    )
    if not args.audit_key:
        writer.op("audit_unsealed", "warning", detail="no --audit-key: lines are not sealed")
    geometry = queues.Geometry(args.queue_messages, args.queue_message_size)
    limit = queues.raise_limit(max(args.msgqueue_limit, args.engines * geometry.kernel_bytes()))
    cgroup = CgroupMemory.find()
    limits = budgets(args, cgroup, cgroup.read() if cgroup else None)
    daemon = Daemon(
        args.node_name,
        ProcResolver(args.proc_root),
        ProcessLauncher(shlex.split(args.fimnotify_cmd)),
        writer,
        metrics,
        engine_count=args.engines,
        budgets=limits,
        memory=cgroup.read if cgroup else lambda: None,
        proc_root=args.proc_root,
        queue_prefix=args.queue_prefix,
        queue_geometry=geometry,
        max_dirs=args.max_dirs,
        line_budget=args.line_budget,
        hashing=hashing.HashPool(args.hash_workers, args.hash_backlog, args.hash_max_bytes),
        scanner=_scanner(args, writer, metrics),
    )
    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr, flush=True)
        writer.op("insecure", "warning", detail=INSECURE_WARNING)
    daemon.remove_stale_queues(args.mqueue_dir)
    if args.engines * geometry.kernel_bytes() > limit:
        writer.op(
            "msgqueue_limit_low", "warning",
            detail=f"{args.engines} queues of {geometry.kernel_bytes()} bytes exceed "
            f"RLIMIT_MSGQUEUE {limit}: some engines cannot start (fewer --engines or "
            "smaller queues)",
        )  # fmt: skip
    daemon.start()
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
        daemon.stop_engines()
        writer.close()
        return 1
    servers = [server]
    health_port = 0
    if args.health_listen:
        health_server, health_port = build_health(args.health_listen, health)
        servers.append(health_server)
    if args.metrics_listen:
        endpoint = BaselineEndpoint(args.node_name, args.baseline_db, daemon.baseline_subjects)
        metrics.serve(*_host_port(args.metrics_listen), routes={"/baselines": endpoint.wsgi})
    loop = threading.Thread(target=daemon.run, name="fimd-io")
    loop.start()
    writer.op(
        "started",
        instance=daemon.instance_id,
        port=port,
        tls=tls is not None,
        health_port=health_port,
        engines=args.engines,
        engine_pids=daemon.pool.pids(),
        max_dirs=args.max_dirs,
        queue_messages=geometry.max_messages,
        queue_message_size=geometry.message_size,
        msgqueue_limit=limit,
        max_watches=limits.max_watches,
        inotify_watch_budget=limits.inotify_watches,
        inotify_watch_budget_source=limits.inotify_watches_source,
        memory_budget=limits.memory_bytes,
        memory_budget_source=limits.memory_source if limits.memory_bytes else "none",
        memory_cgroup=cgroup.directory if cgroup else None,
        line_budget=args.line_budget,
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
    daemon.stop_engines()
    writer.op("stopped", instance=daemon.instance_id)
    writer.close()
    return 0
