"""A throwaway PostgreSQL cluster for tests: Debian's server in a temp folder, loopback only.

The server refuses to run as root, so as root `initdb` and `pg_ctl` run as the `postgres`
user (`runuser`), in a temp folder chowned to it. Local connections (the socket in the
folder) are trusted; TCP on 127.0.0.1 needs the password, so tests can use a wrong one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PASSWORD = "pw-" + secrets.token_hex(8)  # per session; tests check it never shows


def find_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian layout), or one on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """One PostgreSQL server in its own temp folder; `start`, `stop`, `url(db)`, `remove`."""

    def __init__(self, bindir: Path, *, parent: Path | None = None) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="sd35-pg-", dir=parent))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb",
            "--no-sync",
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "-D",
            str(self.data),
        )

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120, cwd=self.root)

    def start(self, *, fsync: bool = False) -> None:
        """Start the server (fsync off by default: tests need no durability, only speed).

        Test processes run in parallel and each takes free ports: if another process took
        this port between `free_port()` and the start, start again on a new one.
        """
        log = self.root / "server.log"
        for attempt in range(3):
            options = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1"
            if not fsync:
                options += " -c fsync=off"
            seen = log.stat().st_size if log.exists() else 0
            flags = ["-w", "-t", "60", "-D", str(self.data), "-l", str(log), "-o", options]
            try:
                self._run("pg_ctl", *flags, "start")
                return
            except subprocess.CalledProcessError:
                said = log.read_bytes()[seen:] if log.exists() else b""
                if b"Address already in use" not in said or attempt == 2:
                    raise
                self.port = free_port()

    def stop(self) -> None:
        self._run("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-m", "fast", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://postgres:{password}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser over the socket (autocommit)."""
        import psycopg

        with psycopg.connect(
            host=str(self.sock), port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)
