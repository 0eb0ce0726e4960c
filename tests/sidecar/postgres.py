"""A real, throwaway PostgreSQL server for the shared-store tests.

PostgreSQL 15 (Debian's `postgresql` package; `scripts/install-tools.sh` installs it) is started from
its own binaries in a temporary folder, on a free loopback port, and stopped at the end of the
session. `initdb` refuses to run as root, so as root the cluster belongs to an unprivileged user (the
`postgres` system user when it exists, else `nobody`) and its commands run through `runuser`.
Missing binaries skip the tests locally but fail them under CI (env `CI` set), like the deploy tools.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.serving import free_port

SUPERUSER = "bark"


def postgres_bin_dir() -> Path | None:
    """The newest installed server's bin folder (Debian keeps them under /usr/lib/postgresql/N/bin)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[-3]), reverse=True
    )
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def missing_postgres(message: str) -> None:
    """Fail under CI, skip locally: a CI run must never pass by skipping the shared-store tests."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _unprivileged_user() -> str | None:
    """None when we are not root (run as ourselves); else a system user that may own the cluster."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` user exists for initdb")


@dataclass
class PostgresServer:
    port: int
    folder: Path
    #: How to run its commands (`runuser -u <user> --` as root) and where its binaries are.
    prefix: tuple[str, ...] = ()
    bin_dir: Path = Path()
    options: str = ""

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _pg_ctl(self, *args: str) -> None:
        command = [*self.prefix, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = (self.folder / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"pg_ctl {args[-1]} failed:\n{result.stdout}{result.stderr}{log}")

    def stop(self) -> None:
        """`pg_ctl stop -m immediate`: every backend killed, no checkpoint (a crash, as far as clients see)."""
        self._pg_ctl("-m", "immediate", "-w", "-t", "60", "stop")

    def start(self) -> None:
        """Start it again on the same port and data (crash recovery runs first)."""
        self._pg_ctl("-o", self.options, "-l", str(self.folder / "server.log"), "-w", "-t", "60", "start")

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database (one per test keeps tests independent); returns its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def postgres_server(durable: bool = False) -> Iterator[PostgresServer]:
    """Start a server for the block. `durable=False` (tests) turns fsync off; benchmarks keep it on."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        missing_postgres("PostgreSQL server binaries (initdb, pg_ctl) missing: run `bash scripts/install-tools.sh`")
        raise AssertionError("unreachable")
    user = _unprivileged_user()
    prefix = ["runuser", "-u", user, "--"] if user else []
    folder = Path(tempfile.mkdtemp(prefix="bark-pg-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data, log = folder / "data", folder / "server.log"
    port = free_port()

    def run(*command: str) -> None:
        result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed:\n{result.stdout}{result.stderr}{server_log[-3000:]}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:  # a test server trades durability for speed; the store's behaviour does not depend on it
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
    try:
        yield PostgresServer(port=port, folder=folder, prefix=tuple(prefix), bin_dir=bin_dir, options=options)
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(folder, ignore_errors=True)
