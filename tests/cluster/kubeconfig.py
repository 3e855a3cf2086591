"""Kubeconfig files (JSON is valid YAML, so no YAML writer is needed)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cluster.pki import KeyPair


def write_kubeconfig(path: Path, server: str, ca: Path, client: KeyPair, user: str) -> Path:
    """Writes a single-context kubeconfig using client certificates; returns `path`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "fim-k8s", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(client.cert), "client-key": str(client.key)},
            }
        ],
        "contexts": [{"name": "fim-k8s", "context": {"cluster": "fim-k8s", "user": user}}],
        "current-context": "fim-k8s",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path
