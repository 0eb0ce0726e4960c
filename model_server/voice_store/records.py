"""What a custom voice is in the store, and what every store does (directory.py, postgres.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol


class StoreUnavailable(Exception):
    """The store cannot be reached or written right now (the catalog answers 503 and serves its cache)."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class VoiceRecord:
    """One custom voice's metadata; its tokens are the `.npz` stored beside it (`digest` is their hash)."""

    #: The key that made it, as a keyed hash (never the key); "" when the server runs without keys.
    owner: str
    name: str
    digest: str
    #: The uploader's statement that the speaker agreed (a kept voice says what it was generated from).
    consent: str
    language: str | None = None
    description: str | None = None
    created_at: datetime = field(default_factory=utc_now)
    #: Published by an admin key: every key may use it.
    published: bool = False

    def describe(self) -> dict[str, Any]:
        """The voice as the listing shows it (no owner: keys never learn each other's hashes)."""
        return {
            "name": self.name,
            "custom": True,
            "language": self.language,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "published": self.published,
            "consent": self.consent,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "name": self.name,
            "digest": self.digest,
            "consent": self.consent,
            "language": self.language,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "published": self.published,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VoiceRecord:
        return cls(
            owner=str(data["owner"]),
            name=str(data["name"]),
            digest=str(data["digest"]),
            consent=str(data["consent"]),
            language=data.get("language"),
            description=data.get("description"),
            created_at=datetime.fromisoformat(data["created_at"]),
            published=bool(data.get("published", False)),
        )


class VoiceStore(Protocol):
    """Where custom voices live. Every method may raise StoreUnavailable; none blocks for long."""

    #: `directory` or `postgres` (the log and the docs name it).
    kind: str

    def describe(self) -> str:
        """Where it is, with no password in it."""
        ...

    def owner_secret(self) -> bytes:
        """The key of the owner hash: made once by the first replica, the same for every replica."""
        ...

    def version(self) -> str:
        """Changes whenever a voice is added, deleted or (un)published."""
        ...

    def records(self) -> list[VoiceRecord]:
        """Every voice's metadata (all owners)."""
        ...

    def read(self, owner: str, name: str) -> bytes | None:
        """A voice's `.npz`; None when there is no such voice."""
        ...

    def add(self, record: VoiceRecord, npz: bytes) -> bool:
        """Store a new voice; False (and nothing changed) when its owner already has one of that name."""
        ...

    def delete(self, owner: str, name: str) -> bool:
        """False when there was no such voice."""
        ...

    def set_published(self, owner: str, name: str, published: bool) -> bool:
        """False when there is no such voice."""
        ...

    def wait_for_change(self, timeout_s: float) -> None:
        """Return when the store may have changed (a notification), or after `timeout_s`, or at `wake()`."""
        ...

    def wake(self) -> None:
        """From another thread: make a `wait_for_change` under way return now (the catalog is closing,
        and a pod's shutdown must not sit out a long wait)."""
        ...

    def close(self) -> None: ...
