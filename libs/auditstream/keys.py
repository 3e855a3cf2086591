"""The audit key ring and the per-node keys derived from it.

The ring is one JSON document, `keys.json` in the Secret `fim-audit-key` (written by
libs/pki, mounted by fimd, read by the verifier)::

    {"version":1,"current":3,"keys":[
      {"generation":1,"secret":"<64 hex>","created":"2026-12-01T10:00:00Z"}, ...]}

Each generation is 32 random bytes. A node never uses a generation directly: its key is
HKDF-SHA256 (RFC 5869) of the generation with the salt `SALT` and the info
`b"node:" + node name`, 32 bytes. A line's key id (`kid`) is `<node>/<generation>`, so the
verifier derives the key of any node and generation from the ring alone.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

SALT = b"fim-k8s audit stream v1"
FORMAT_VERSION = 1
#: Generations kept in the ring (older ones are dropped at rotation): with the default
#: 30-day rotation, two years of lines stay verifiable.
MAX_GENERATIONS = 24
#: The ring file is small; anything bigger is refused before parsing.
MAX_RING_BYTES = 64 << 10
#: A Kubernetes node name (DNS subdomain) and a generation number.
_KID = re.compile(r"\A([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)/([1-9][0-9]{0,8})\Z")


class KeyRingError(ValueError):
    """The ring or a key id cannot be used."""


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 extract-and-expand with HMAC-SHA256."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF length out of range")
    prk = hmac.digest(salt, ikm, "sha256")
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
        counter += 1
    return out[:length]


def kid(node: str, generation: int) -> str:
    return f"{node}/{generation}"


def parse_kid(text: str) -> tuple[str, int]:
    """(node, generation) of a key id; KeyRingError if it is not one."""
    match = _KID.match(text)
    if match is None:
        raise KeyRingError(f"not a key id (node/generation): {text!r}")
    return match.group(1), int(match.group(3))


@dataclass(frozen=True)
class NodeKey:
    """What a sealer needs: the key id written on each line and the derived key."""

    kid: str
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class Generation:
    generation: int
    secret: bytes = field(repr=False)
    created: datetime


@dataclass(frozen=True)
class KeyRing:
    """All generations kept, and the one new lines are sealed with."""

    current: int
    generations: Mapping[int, Generation]

    def node_key(self, node: str, generation: int | None = None) -> NodeKey:
        number = self.current if generation is None else generation
        entry = self.generations.get(number)
        if entry is None:
            raise KeyRingError(f"generation {number} is not in the key ring")
        if _KID.match(kid(node, number)) is None:
            raise KeyRingError(f"not a node name: {node!r}")
        derived = hkdf_sha256(entry.secret, SALT, b"node:" + node.encode())
        return NodeKey(kid(node, number), derived)

    def key_for(self, key_id: str) -> NodeKey:
        node, generation = parse_kid(key_id)
        return self.node_key(node, generation)

    def dumps(self) -> bytes:
        keys = [
            {
                "generation": g.generation,
                "secret": g.secret.hex(),
                "created": g.created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            for g in sorted(self.generations.values(), key=lambda g: g.generation)
        ]
        doc = {"version": FORMAT_VERSION, "current": self.current, "keys": keys}
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def _generation(entry: object) -> Generation:
    if not isinstance(entry, dict):
        raise KeyRingError("a key entry is not an object")
    number, secret, created = entry.get("generation"), entry.get("secret"), entry.get("created")
    if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 10**9:
        raise KeyRingError(f"bad generation number: {number!r}")
    if not isinstance(secret, str) or re.fullmatch(r"[0-9a-f]{64}", secret) is None:
        raise KeyRingError(f"generation {number}: the secret is not 64 lower-case hex digits")
    if not isinstance(created, str):
        raise KeyRingError(f"generation {number}: no creation time")
    try:
        when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise KeyRingError(f"generation {number}: bad creation time {created!r}") from None
    return Generation(number, bytes.fromhex(secret), when)


def loads(data: bytes) -> KeyRing:
    """Parses and checks a ring; KeyRingError naming what is wrong."""
    if len(data) > MAX_RING_BYTES:
        raise KeyRingError(f"key ring larger than {MAX_RING_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise KeyRingError(f"key ring is not JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        raise KeyRingError(f"key ring is not a version {FORMAT_VERSION} object")
    entries = doc.get("keys")
    if not isinstance(entries, list) or not entries:
        raise KeyRingError("key ring has no keys")
    generations: dict[int, Generation] = {}
    for entry in entries:
        parsed = _generation(entry)
        if parsed.generation in generations:
            raise KeyRingError(f"generation {parsed.generation} appears twice")
        generations[parsed.generation] = parsed
    current = doc.get("current")
    if not isinstance(current, int) or current not in generations:
        raise KeyRingError(f"current generation {current!r} is not in the ring")
    return KeyRing(current, generations)


def new_ring(now: datetime, random: Callable[[int], bytes] = secrets.token_bytes) -> KeyRing:
    return KeyRing(1, {1: Generation(1, random(32), now)})


def rotate(
    ring: KeyRing,
    now: datetime,
    *,
    every: timedelta,
    keep: int = MAX_GENERATIONS,
    random: Callable[[int], bytes] = secrets.token_bytes,
) -> KeyRing:
    """`ring` with a new current generation if the current one is `every` old, keeping the
    newest `keep` generations; `ring` itself when nothing is due."""
    if now - ring.generations[ring.current].created < every:
        return ring
    number = max(ring.generations) + 1
    kept = sorted(ring.generations)[-(keep - 1) :] if keep > 1 else []
    generations = {n: ring.generations[n] for n in kept}
    generations[number] = Generation(number, random(32), now)
    return KeyRing(number, generations)
