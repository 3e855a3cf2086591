"""`python -m libs.pki`: create or renew fim-k8s's mTLS Secrets (see libs/pki/bootstrap.py)
and the audit key ring Secret (libs/pki/auditkey.py).

Run by deploy/base's Job (on install) and CronJob (daily). Exit 0 when every Secret is
valid; non-zero, with the error on stderr, otherwise (the Job retries).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime, timedelta

from kubernetes import client, config

from libs.pki.auditkey import ROTATE_EVERY, AuditKeyError, ensure_audit_key
from libs.pki.bootstrap import ensure
from libs.pki.kube import KubeSecretStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.pki", description=__doc__.split("\n")[0])
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "fim-system"))
    parser.add_argument("--kubeconfig", help="default: in-cluster, else $KUBECONFIG")
    parser.add_argument(
        "--audit-key-rotation",
        type=int,
        default=ROTATE_EVERY.days,
        help="days after which the audit key ring gets a new current generation",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    if args.audit_key_rotation < 1:
        parser.error("--audit-key-rotation must be >= 1 day")
    api = client.CoreV1Api()
    now = datetime.now(UTC)
    ensure(KubeSecretStore(api, args.namespace), args.namespace, now)
    logging.info("mTLS Secrets in namespace %s are valid", args.namespace)
    audit_store = KubeSecretStore(api, args.namespace, "Opaque", "audit-key")
    try:
        ensure_audit_key(audit_store, now, timedelta(days=args.audit_key_rotation))
    except AuditKeyError as err:
        print(f"libs.pki: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
