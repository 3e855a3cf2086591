"""The hostile workload of tests/e2e/test_hostile.py: busybox `sh` scripts that a container
runs itself (`kubectl exec`), and the raw names they create.

Every byte of a hostile name reaches the script as an octal escape of busybox `printf`, so a
name can hold any byte but NUL and '/' (and no trailing newline, which `$(...)` strips),
whatever the shell, kubectl and the API server do with text.
"""

from __future__ import annotations

#: Directories the hostile pod prepares (its command) and its FimWatchers watch.
DEEP = "/deep"
FORGE_DIR = "/forge"
FLOOD_DIR = "/flood"
PREPARE = f"mkdir -p {DEEP} {FORGE_DIR} {FLOOD_DIR} && exec sleep 3600"

PATH_MAX = 4096
#: Nesting levels of 255-byte names: /deep + 18 x 256 = 4613 bytes > PATH_MAX.
LEVELS = 18


def octal(name: bytes) -> str:
    """`name` as busybox printf octal escapes (no byte is taken literally)."""
    return "".join(f"\\{byte:03o}" for byte in name)


def printed(name: bytes) -> str:
    """A double-quoted shell word whose value is exactly `name`."""
    return f"\"$(printf '{octal(name)}')\""


def dir_name(level: int) -> bytes:
    """255 bytes, not UTF-8 (a lone continuation byte, then 0xFF)."""
    return bytes([0x80 + level]) + b"\xff" * 254


def file_name(level: int) -> bytes:
    """201 bytes, not UTF-8."""
    return b"\xfe" * 200 + bytes([0x80 + level])


def deep_paths() -> set[bytes]:
    """Every directory and file path the deep script creates."""
    out, here = set(), DEEP.encode()
    for level in range(LEVELS):
        here += b"/" + dir_name(level)
        out |= {here, here + b"/" + file_name(level)}
    return out


def deepest_reportable() -> bytes:
    """The longest created path an event line can carry: at most PATH_MAX bytes, in a
    directory whose path is short enough to be watched (openat2 takes < PATH_MAX)."""
    return max(
        (p for p in deep_paths() if len(p) <= PATH_MAX and len(p.rpartition(b"/")[0]) < PATH_MAX),
        key=len,
    )


def deep_script() -> str:
    """Nests the names with relative steps (`cd -P`: busybox's logical `cd` would chdir to
    the whole path, which fails beyond PATH_MAX) and creates a file at each level; prints
    the length of the deepest directory's path."""
    leads = " ".join(f"{0x80 + level:03o}" for level in range(LEVELS))
    return f"""set -e
ff=$(printf '%254s' '' | tr ' ' '\\377')
fe=$(printf '%200s' '' | tr ' ' '\\376')
cd -P {DEEP}
for lead in {leads}; do
  lead=$(printf "\\\\$lead")
  mkdir "$lead$ff"
  cd -P "$lead$ff"
  : > "$fe$lead"
done
pwd -P | wc -c
"""


#: A directory name that tries to end the `path` field and forge an ACCESS event.
FORGE = b'x","event":"ACCESS","path":"'
#: File names with every kind of line break and control character a viewer or a splitter
#: reacts to, and a forging name that is not UTF-8 as well.
NAMES = (
    b"line\nbreak",
    b"carriage\rreturn",
    b"vt\x0bff\x0cfs\x1cgs\x1drs\x1e",
    "nel\u0085".encode(),
    "ls\u2028ps\u2029".encode(),
    "csi\u009b31m c1\u0080\u009f".encode(),
    b"del\x7fesc\x1b[2J",
    "bidi\u202etxt.exe\u2066".encode(),
    b'quote"back\\slash\ttab',
    b'{"kind":"event"}',
    b'\xff","event":"ACCESS","path":"\xfe',
)


def forge_paths() -> list[bytes]:
    """The paths the forge script creates, in order."""
    base = FORGE_DIR.encode() + b"/"
    return [base + FORGE, base + FORGE + b"/inside", *(base + name for name in NAMES)]


def forge_script() -> str:
    lines = ["set -e", f"cd {FORGE_DIR}", f"mkdir {printed(FORGE)}"]
    lines.append(f"cd {printed(FORGE)} && : > inside && cd ..")
    lines += [f": > {printed(name)}" for name in NAMES]
    return "\n".join(lines) + "\n"


#: A JSON-shaped logFormat, every placeholder inside quotes (docs/logging.md).
LOG_FORMAT = (
    '{{"fmt":"hostile","event":"{event}","path":"{path}","pathBytes":"{pathBytes}",'
    '"dir":"{dir}","file":"{file}","pod":"{pod}","watcher":"{watcher}"}}'
)


def flood_script(appends: int, bursts: int, pause: float) -> str:
    """`appends` appends in `bursts` bursts, each as fast as the shell makes them, with
    `pause` seconds between bursts (so that the flood lasts long enough for a calm pod to act
    in the middle of it without writing more lines); alternating between two files (the
    kernel merges an event into an identical one still queued)."""
    each = appends // bursts
    return (
        f"cd {FLOOD_DIR} && b=0 && while [ $b -lt {bursts} ]; do "
        f"i=0; while [ $i -lt {each} ]; do echo x >> f$((i & 1)); i=$((i + 1)); done; "
        f"b=$((b + 1)); [ $b -eq {bursts} ] || sleep {pause}; done"
    )
