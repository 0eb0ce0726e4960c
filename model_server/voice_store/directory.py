"""Custom voices in a directory: the default, for one replica (or processes sharing one volume).

    <root>/voices/<owner>/<name>.npz    the speaker prompt, as uploaded (or as kept)
    <root>/voices/<owner>/<name>.json   its record (written last: a voice exists once this file does)
    <root>/.version                     a counter bumped by every change (replicas poll it)
    <root>/.owner-secret                the owner hash's key, made once (mode 0600)
    <root>/.lock                        writers take it (flock), so the counter and the files agree

Owners are hex hashes (or `_` without keys) and names match `[A-Za-z0-9_-]{1,64}`, so no part of a
path comes from a client unchecked. Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from model_server.voice_store.records import StoreUnavailable, VoiceRecord

_ANONYMOUS_DIR = "_"
#: What an owner (a hex hash, or `_`) and a name (`[A-Za-z0-9_-]{1,64}`) may hold.
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _owner_dir(owner: str) -> str:
    return owner or _ANONYMOUS_DIR


def _write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class DirectoryVoiceStore:
    """The voice store on a local (or mounted) directory."""

    kind = "directory"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._woken = threading.Event()
        # Made once, here: later calls never re-create it, so an unmounted volume is an outage, not
        # a new empty store.
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return str(self.root)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """OS errors (a missing or read-only volume, a full disk) are the store being unavailable."""
        try:
            self.root.stat()  # the directory itself gone (a volume unmounted) is an outage
            yield
        except OSError as error:
            raise StoreUnavailable(f"voice directory {self.root}: {error}") from error

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._guard():
            (self.root / "voices").mkdir(exist_ok=True)
            with open(self.root / ".lock", "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _bump(self) -> None:
        """Under the lock: the next version (replicas watching the directory reload)."""
        path = self.root / ".version"
        current = int(path.read_text() or 0) if path.exists() else 0
        _write_atomically(path, str(current + 1).encode())

    def owner_secret(self) -> bytes:
        path = self.root / ".owner-secret"
        with self._guard():
            if path.exists():
                return bytes.fromhex(path.read_text().strip())
        with self._locked():
            if not path.exists():
                _write_atomically(path, secrets.token_hex(32).encode(), mode=0o600)
            return bytes.fromhex(path.read_text().strip())

    def version(self) -> str:
        with self._guard():
            path = self.root / ".version"
            return path.read_text().strip() if path.exists() else "0"

    def records(self) -> list[VoiceRecord]:
        found = []
        with self._guard():
            for path in sorted((self.root / "voices").glob("*/*.json")):
                try:
                    found.append(VoiceRecord.from_json(json.loads(path.read_text())))
                except (ValueError, KeyError):  # a foreign or damaged file is not a voice
                    continue
        return found

    def _paths(self, owner: str, name: str) -> tuple[Path, Path]:
        if not _SAFE.fullmatch(owner or _ANONYMOUS_DIR) or not _SAFE.fullmatch(name):  # never a path from a client
            raise ValueError(f"not a voice's owner and name: {owner!r}, {name!r}")
        folder = self.root / "voices" / _owner_dir(owner)
        return folder / f"{name}.npz", folder / f"{name}.json"

    def read(self, owner: str, name: str) -> bytes | None:
        data, record = self._paths(owner, name)
        with self._guard():
            if not record.exists():
                return None
            return data.read_bytes()

    def add(self, record: VoiceRecord, npz: bytes) -> bool:
        data, meta = self._paths(record.owner, record.name)
        with self._locked():
            if meta.exists():
                return False
            data.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(data, npz)
            _write_atomically(meta, json.dumps(record.to_json(), indent=1).encode())
            self._bump()
        return True

    def delete(self, owner: str, name: str) -> bool:
        data, meta = self._paths(owner, name)
        with self._locked():
            if not meta.exists():
                return False
            meta.unlink()  # the record first: from here on the voice does not exist
            data.unlink(missing_ok=True)
            self._bump()
        return True

    def set_published(self, owner: str, name: str, published: bool) -> bool:
        _, meta = self._paths(owner, name)
        with self._locked():
            if not meta.exists():
                return False
            record = json.loads(meta.read_text())
            record["published"] = published
            _write_atomically(meta, json.dumps(record, indent=1).encode())
            self._bump()
        return True

    def wait_for_change(self, timeout_s: float) -> None:
        # Nothing notifies: the catalog compares versions after each wait.
        if self._woken.wait(timeout_s):
            self._woken.clear()

    def wake(self) -> None:
        self._woken.set()

    def close(self) -> None:
        pass
