"""Proof that a drain is clusterops' own: a short tag on the reason that only a holder of the key can make.

A reason we set ends in ` #co1.<t>.<mac>`: `t` the Unix time we set it, `mac` the first 16 hex digits of
HMAC-SHA256(key, "co1", node, text before the tag, t). A reason that merely looks like ours
(`clusterops:x by hand`) has no valid tag, so it is someone else's: never resumed, never re-reasoned.
The proof lives in Slurm itself, so the watcher on the head node and the hooks on every node read the
same thing; they need the same key. Where Slurm says when the reason was set (its JSON's
`reason_changed_at`), a tag more than REPLAY_WINDOW_S away from that time is a copy, not ours.

The key is 32 random bytes in a file only root reads (`key_path`). The first clusterops process that
needs it creates it (0600, O_EXCL, O_NOFOLLOW, in a 0700 directory owned by root). On a cluster, the
operator copies the same file to every node and the head node (playbooks, docs/health.md); a node with
a different key cannot undo the others' drains, and nothing of anyone else's is ever undone.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from clusterops.errors import ConfigError

TAG_VERSION = "co1"
MAC_HEX = 16
KEY_BYTES = 32
MAX_KEY_FILE = 4096
REPLAY_WINDOW_S = 600  # clocks of nodes and controller may differ; a copied reason is set much later
TAG_LEN = len(f" #{TAG_VERSION}.") + 12 + 1 + MAC_HEX  # the longest tag suffix
_TAG = re.compile(
    rf"^(?P<text>.*\S) #{TAG_VERSION}\.(?P<t>[0-9]{{1,12}})\.(?P<mac>[0-9a-f]{{{MAC_HEX}}})$", re.S
)


def key_path(cfg) -> Path:
    """Where the drain key lives: `[health] drain_key_file` when the config has it, else `.keys/drain.key`
    in the state directory shared by every node's state (the part of paths.state_dir before `{node}`)."""
    explicit = cfg.health.drain_key_file
    if explicit:
        return Path(explicit)
    template = cfg.paths.state_dir
    if "{node}" in template:
        head = template.split("{node}", 1)[0]
        base = Path(head) if head.endswith("/") else Path(head).parent
    else:
        base = Path(template)
    return base / ".keys" / "drain.key"


def normalize(text: str) -> str:
    """A reason as scontrol stores it from us: one line, single spaces, no `=` (scontrol's key mark)."""
    return " ".join(text.replace("=", ":").split())


@dataclass(frozen=True)
class Tag:
    text: str  # the reason before the tag
    t: int
    mac: str


def parse(reason: str) -> Tag | None:
    """The tag on a reason, or None when it carries none (it may still be forged: see DrainKey.owns)."""
    if not isinstance(reason, str) or len(reason) > 4096:
        return None
    m = _TAG.match(reason)
    if m is None:
        return None
    return Tag(m.group("text"), int(m.group("t")), m.group("mac"))


class DrainKey:
    """The key that signs and verifies our drain reasons."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ConfigError("drain key: shorter than 16 bytes")
        self._key = bytes(key)

    def __repr__(self) -> str:  # never show the key
        return "DrainKey(***)"

    def _mac(self, node: str, text: str, t: int) -> str:
        msg = "\0".join((TAG_VERSION, node, text, str(t))).encode("utf-8", "surrogatepass")
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:MAC_HEX]

    def sign(self, node: str, reason: str, limit: int = 240, now: float | None = None) -> str:
        """`reason` (normalized, clipped to fit `limit` with the tag) with our tag on the end."""
        t = int(time.time() if now is None else now)
        text = normalize(reason)
        room = max(8, limit - TAG_LEN)
        if len(text) > room:
            text = text[: room - 3].rstrip() + "..."
        if not text:
            raise ConfigError("a drain needs a reason")
        return f"{text} #{TAG_VERSION}.{t}.{self._mac(node, text, t)}"

    def owns(self, node: str, reason: str, set_at: int | None = None) -> bool:
        """Whether `reason` on `node` is a drain we set: a valid tag for this node, and (when Slurm says
        when the reason was set) a tag made at about that time."""
        return self.why_not(node, reason, set_at) == ""

    def why_not(self, node: str, reason: str, set_at: int | None = None) -> str:
        """ "" when the reason is ours; else why not, in a few words."""
        tag = parse(reason)
        if tag is None:
            return "no clusterops tag"
        if not hmac.compare_digest(tag.mac, self._mac(node, tag.text, tag.t)):
            return "tag does not verify (not set by clusterops with this key)"
        if set_at and abs(int(set_at) - tag.t) > REPLAY_WINDOW_S:
            return f"tag made at {tag.t} but the reason was set at {int(set_at)}: copied"
        return ""


def load(path: str | os.PathLike[str], create: bool = True) -> DrainKey:
    """The key in `path`; made there first when missing and `create`. A key file or directory another
    user could write or swap, a symlink, or a file of the wrong size is refused (ConfigError)."""
    path = Path(path)
    _check_dir(path.parent, create)
    try:
        return DrainKey(_read(path))
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"drain key {path}: missing (copy it from the head node)") from None
    _create(path)
    return DrainKey(_read(path))


def _check_dir(d: Path, create: bool) -> None:
    if create:
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"drain key directory {d}: cannot create it: {e.strerror}") from None
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        raise ConfigError(f"drain key directory {d}: missing (copy the key from the head node)") from None
    except OSError as e:
        raise ConfigError(f"drain key directory {d}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"drain key directory {d}: not a directory (a symlink?): refusing it")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ConfigError(
            f"drain key directory {d}: must be owned by uid {os.geteuid()} and writable by it alone"
        )


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ConfigError(f"drain key {path}: cannot open it ({e.strerror}); a symlink is refused") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"drain key {path}: not a regular file")
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ConfigError(f"drain key {path}: must be owned by uid {os.geteuid()} and mode 0600")
        data = os.read(fd, MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if not 16 <= len(data) <= MAX_KEY_FILE:
        raise ConfigError(f"drain key {path}: {len(data)} bytes; expected 16 to {MAX_KEY_FILE}")
    return data


def _create(path: Path) -> None:
    """Write a fresh key under a private name, then link it into place: the first writer wins, and no
    reader ever sees a partial key."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as e:
        raise ConfigError(f"drain key {path}: cannot create it: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        pass  # another process made it first: use theirs
    except OSError as e:
        raise ConfigError(f"drain key {path}: cannot create it: {e.strerror}") from None
    finally:
        os.unlink(tmp)
