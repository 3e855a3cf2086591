"""`kubectl fim verify` (also `python -m libs.auditstream`): verify collected fimd lines.

    verify (--key FILE | --secret [NAMESPACE/]NAME) [--format auto|kubectl|loki|elastic]
           [--ignore-order] [-o text|json] FILE... ('-' for stdin)

FILE is what `kubectl logs` (with or without --timestamps/--prefix), Loki or Elastic
exported (collect.py). --key is the key ring: `keys.json` as mounted, a directory holding it,
or the Secret as `kubectl get secret fim-audit-key -o json` prints it; --secret reads that
Secret with kubectl (namespace fim-system by default). Exit status: 0 every line verified,
1 any finding (tampering, loss, unsealed lines, missing heartbeats), 2 unusable key or input.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from typing import TextIO

from libs.auditstream import keys
from libs.auditstream.collect import FORMATS, InputError, read_all
from libs.auditstream.verify import BootReport, verify

SECRET_KEY = "keys.json"  # noqa: S105 - a file name
DEFAULT_SECRET = "fim-system/fim-audit-key"  # noqa: S105 - a Secret name
MAX_INPUT_BYTES = 4 << 30


class UsageError(ValueError):
    pass


def ring_from_bytes(data: bytes, name: str) -> keys.KeyRing:
    """A ring from keys.json or from a Secret's JSON (its data.keys.json, base64)."""
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("kind") == "Secret":
        encoded = (doc.get("data") or {}).get(SECRET_KEY)
        if not isinstance(encoded, str):
            raise UsageError(f"{name}: the Secret has no {SECRET_KEY}")
        data = base64.b64decode(encoded)
    try:
        return keys.loads(data)
    except keys.KeyRingError as err:
        raise UsageError(f"{name}: {err}") from None


def _read(path: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        if os.path.isdir(path):
            path = os.path.join(path, SECRET_KEY)
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{path}: larger than {limit} bytes")
    return data


def _secret(reference: str) -> bytes:
    namespace, _, name = reference.rpartition("/")
    command = [os.environ.get("KUBECTL", "kubectl"), "get", "secret", name, "-o", "json"]
    command += ["-n", namespace or "fim-system"]
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise UsageError(f"{' '.join(command)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubectl fim verify", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--key", help="keys.json, its directory, or the Secret as JSON")
    source.add_argument(
        "--secret", help=f"[NAMESPACE/]NAME of the Secret (default {DEFAULT_SECRET})"
    )
    parser.add_argument("--format", choices=FORMATS, default="auto", help="input format")
    parser.add_argument("--ignore-order", action="store_true", help="do not judge line order")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument("files", nargs="+", metavar="FILE", help="collected lines ('-': stdin)")
    return parser.parse_args(argv)


def _describe(report: BootReport) -> str:
    who = f"node {report.node or '?'} " + (f"boot {report.boot}" if report.boot else "unsealed")
    parts = [f"{report.verified} lines verified"]
    if report.boot:
        parts.append(f"seq {report.first_seq}..{report.last_seq}")
        parts.append(f"{report.heartbeats} heartbeats")
    if report.duplicates:
        parts.append(f"{report.duplicates} duplicates ignored")
    if report.first_seq > 1:
        parts.append(f"starts within the boot at seq {report.first_seq}")
    for kind, finding in sorted(report.findings.items()):
        parts.append(f"{kind.upper()} x{finding.count}, first {finding.first}")
    return f"{who}: {'OK' if report.ok else 'FAILED'}: " + "; ".join(parts)


def write(reports: list[BootReport], output: str, out: TextIO) -> None:
    if output == "json":
        json.dump([r.as_dict() for r in reports], out, indent=2)
        out.write("\n")
        return
    for report in reports:
        out.write(_describe(report) + "\n")
    failed = sum(not r.ok for r in reports)
    total = sum(r.verified for r in reports)
    out.write(f"{total} lines verified in {len(reports)} boots; {failed} failed\n")


def main(argv: list[str]) -> int:
    """The `verify` command: argv without the program name; returns the exit status."""
    args = parse_args(argv)
    try:
        if args.key:
            ring = ring_from_bytes(_read(args.key, keys.MAX_RING_BYTES + 4096), args.key)
        else:
            reference = args.secret or DEFAULT_SECRET
            ring = ring_from_bytes(_secret(reference), reference)
        inputs = [(path, _read(path)) for path in args.files]
        records = read_all(inputs, args.format)
    except (UsageError, InputError, OSError, subprocess.TimeoutExpired) as err:
        print(f"verify: {err}", file=sys.stderr)
        return 2
    if not records:
        print("verify: no lines in the input", file=sys.stderr)
        return 2
    reports = verify(records, ring, judge_order=not args.ignore_order)
    write(reports, args.output, sys.stdout)
    return 0 if all(r.ok for r in reports) else 1
