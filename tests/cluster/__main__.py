"""`python -m tests.cluster up|down|status|import [--apiserver-only] [--state-dir DIR] [TAR...]`.

`import` loads image archives (OCI or docker, e.g. `bazel-bin/images/fimd.tar`) into the
running cluster's containerd.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.cluster.cluster import Cluster
from tests.cluster.config import DEFAULT_STATE_DIR
from tests.cluster.controlplane import STANDARD_APISERVER_PORT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "import"])
    parser.add_argument("archives", nargs="*", type=Path, help="image archives (import)")
    parser.add_argument("--apiserver-only", action="store_true", help="only etcd + kube-apiserver")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    existing = Cluster.attach(args.state_dir)
    if args.command == "up":
        return _up(args.state_dir, existing, apiserver_only=args.apiserver_only)
    if existing is None:
        print(f"no cluster recorded in {args.state_dir}")
        return 0 if args.command == "down" else 1
    if args.command == "down":
        existing.down(remove_state=True)
        print("cluster stopped; host restored")
        return 0
    if args.command == "import":
        existing.import_images(args.archives)
        return 0
    return _status(existing)


def _up(state_dir: Path, existing: Cluster | None, *, apiserver_only: bool) -> int:
    if existing is not None:
        print(f"a cluster is already recorded in {state_dir}: run `down` first", file=sys.stderr)
        return 1
    cluster = Cluster(
        state_dir, apiserver_only=apiserver_only, apiserver_port=STANDARD_APISERVER_PORT
    )
    cluster.up()
    print(f"cluster up in {cluster.startup_seconds:.1f} s ({cluster.control_plane.server})")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def _status(cluster: Cluster) -> int:
    states = cluster.status()
    for name, alive in states.items():
        print(f"{name:26} {'running' if alive else 'EXITED'}")
    print(f"kubeconfig: {cluster.kubeconfig}")
    return 0 if all(states.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
