"""Custom voices kept as data: a store (a directory, or PostgreSQL shared by replicas) and each
replica's catalog of it (an index in memory, prompts cached, changes seen within a second)."""

from __future__ import annotations

from model_server.voice_store.records import StoreUnavailable, VoiceRecord, VoiceStore


def open_store(location: str) -> VoiceStore:
    """The store `BARK_VOICE_STORE` names: a `postgresql://` (or `postgres://`) URL, else a directory."""
    if location.startswith(("postgresql://", "postgres://")):
        from model_server.voice_store.postgres import PostgresVoiceStore

        return PostgresVoiceStore(location)
    from model_server.voice_store.directory import DirectoryVoiceStore

    return DirectoryVoiceStore(location)


__all__ = ["StoreUnavailable", "VoiceRecord", "VoiceStore", "open_store"]
