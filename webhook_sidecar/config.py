"""All sidecar settings in one typed place, read once at start (env prefix `SIDECAR_`).

Secrets (`WEBHOOK_SECRET`, `API_KEYS`, `ADMIN_API_KEYS`, `MODEL_API_KEY`) are `SecretStr`, so neither
logs nor a printed `Settings` show them. The model's own request limits are not here: the sidecar reads
the model server's settings (`BARK_*`, limits.py), so the two cannot disagree.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bark_common.api_keys import load_api_keys

from .readiness import ready_url
from .signing import generate_secret, split_secrets

logger = logging.getLogger("webhook_sidecar")
_STORE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


class Settings(BaseSettings):
    """Sidecar settings. Defaults suit the predictor pod the Helm chart builds."""

    model_config = SettingsConfigDict(env_prefix="SIDECAR_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(default=9081, ge=1, le=65535)
    model_url: str = "http://127.0.0.1:8080/v1/models/bark:predict"
    model_api_key: SecretStr = Field(
        default=SecretStr(""), description="sent to the model server; empty: the first of API_KEYS, if any"
    )
    db_path: Path = Path("/var/lib/bark-jobs/jobs.sqlite3")
    database_url: SecretStr = Field(
        default=SecretStr(""),
        description="sqlite:///abs/path (one sidecar) or postgresql://user:pass@host:5432/db (shared by "
        "any number of sidecars); empty: SQLite at db_path",
    )
    model_ready_url: str = Field(
        default="", description="the model server's readiness route; empty: model_url without `:predict`"
    )
    lease_s: float = Field(
        default=60.0,
        ge=1,
        description="PostgreSQL store: a claimed job's lease, renewed every lease_s/6; work whose lease "
        "could not be renewed for lease_s stops",
    )
    db_pool_size: int = Field(default=10, ge=1, description="PostgreSQL store: connections per sidecar")
    db_wait_s: float = Field(
        default=10.0, gt=0, description="PostgreSQL store: longest wait for a connection before a 503"
    )

    webhook_secret: SecretStr = Field(
        default=SecretStr(""),
        description="HMAC keys, `whsec_<base64>` or raw strings, separated by spaces or commas: every delivery "
        "is signed with each (rotation); empty: random per start",
    )
    concurrency: int = Field(default=2, ge=1, description="model calls in flight at once")
    delivery_concurrency: int = Field(default=4, ge=1, description="webhook POSTs in flight at once")
    job_timeout_s: float = Field(default=900.0, gt=0, description="one run of a job, 503 back-off included")
    max_attempts: int = Field(default=14, ge=1, description="model calls (5xx) and webhook deliveries, each")
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    delivery_timeout_s: float = Field(default=30.0, gt=0)
    webhook_allowlist: str = Field(default="", description="comma-separated hosts or CIDRs allowed although private")
    webhook_ports: str = Field(default="", description="comma-separated ports webhooks may use; empty: any")
    webhook_ca_file: Path | None = Field(
        default=None, description="PEM bundle that verifies https receivers instead of the public CAs (a private CA)"
    )
    public_url: str = Field(default="", description="base URL clients reach the sidecar at; empty: the request's")
    inline_audio_max_bytes: int = Field(
        default=4 * 1024 * 1024, ge=0, description="larger audio is delivered as a download URL instead"
    )
    download_ttl_s: int = Field(default=86_400, ge=1)
    max_result_bytes: int = Field(
        default=48 * 1024 * 1024,
        ge=1024,
        description="largest audio one job may produce (encoded bytes; 48 MiB is 17 min of 24 kHz WAV, hours of "
        "mp3/opus): a larger answer fails the job while it streams in, so it can never exhaust the sidecar's "
        "memory (parsing one answer peaks at about 4x its audio)",
    )
    max_queued_per_key: int = Field(
        default=100, ge=0, description="unfinished (queued or running) jobs one API key may have; 0: no cap"
    )
    max_queued_total: int = Field(default=10_000, ge=0, description="unfinished jobs in the store; 0: no cap")
    queue_full_retry_after_s: int = Field(default=30, ge=1, description="Retry-After of a 429 at a cap")
    api_keys: SecretStr = Field(default=SecretStr(""), description="comma-separated keys for the job routes")
    api_keys_file: Path | None = Field(default=None, description="one key per line (a mounted Secret)")
    admin_api_keys: SecretStr = Field(
        default=SecretStr(""), description="comma-separated keys that may read and cancel every caller's jobs"
    )
    cloudevents_require_key: bool = Field(
        default=True,
        description="false: `POST /` accepts CloudEvents without a key (Knative Triggers send none)",
    )
    request_event_type: str = "com.barkkserve.tts.requested"
    event_source: str = Field(default="", description="CloudEvent `source` of results; empty: derived")
    grace_period_s: float = Field(default=25.0, ge=0, description="SIGTERM: time to finish in-flight work")
    poll_interval_s: float = Field(default=1.0, gt=0, description="longest idle wait between store checks")
    progress_poll_s: float = Field(
        default=2.0, ge=0, description="how often a running job asks the model server for its progress; 0: never"
    )
    cancel_poll_s: float = Field(
        default=1.0, gt=0, le=60, description="how often a running job checks whether its caller cancelled it"
    )
    job_retention_s: int = Field(default=7 * 86_400, ge=60, description="finished jobs are purged after this")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    log_format: Literal["text", "json"] = "text"

    @field_validator("database_url")
    @classmethod
    def _known_store(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not url.startswith(_STORE_SCHEMES):
            raise ValueError("must start with sqlite:/// or postgresql:// (postgres:// also accepted)")
        return value

    @property
    def store_url(self) -> str:
        """The job store's URL; `sqlite:///<db_path>` when none is set."""
        return self.database_url.get_secret_value() or f"sqlite:///{self.db_path}"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file of `store_url` (`sqlite:///var/x.db` is `/var/x.db`), or None for PostgreSQL."""
        url = self.database_url.get_secret_value()
        if not url:
            return self.db_path
        if not url.startswith("sqlite:"):
            return None
        return Path("/" + url.removeprefix("sqlite:").lstrip("/"))

    @field_validator("api_keys_file", "webhook_ca_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        # An env var set to "" (a chart value left empty) means "no file", not the current folder.
        return None if value == "" else value

    def load_api_keys(self) -> tuple[str, ...]:
        """Keys from `API_KEYS` then `API_KEYS_FILE`, in order, once each; none means auth is off."""
        return load_api_keys(self.api_keys.get_secret_value(), self.api_keys_file)

    def load_admin_keys(self) -> tuple[str, ...]:
        return load_api_keys(self.admin_api_keys.get_secret_value(), None)

    def webhook_secrets(self) -> tuple[str, ...]:
        """Every signing secret, in order (the first is the current one)."""
        return split_secrets(self.webhook_secret.get_secret_value())

    @property
    def readiness_url(self) -> str:
        return self.model_ready_url or ready_url(self.model_url)

    def model_key(self, api_keys: tuple[str, ...]) -> str:
        """The key for the model server: its own setting, else ours (the chart mounts one Secret)."""
        return self.model_api_key.get_secret_value() or (api_keys[0] if api_keys else "")

    def with_webhook_secret(self) -> Settings:
        """Fill an empty secret with a random one: signing works, but receivers cannot verify it."""
        if self.webhook_secret.get_secret_value():
            return self
        logger.warning(
            "SIDECAR_WEBHOOK_SECRET is empty: signing with a random secret that changes at every start; "
            "receivers cannot verify deliveries. Set it from a Secret."
        )
        return self.model_copy(update={"webhook_secret": SecretStr(generate_secret())})

    @property
    def retry_window_s(self) -> float:
        """The longest a receiver may be down and still get its delivery (before jitter)."""
        return sum(min(self.retry_max_s, self.retry_base_s * 2**n) for n in range(self.max_attempts - 1))
