"""A PostgreSQL server of the test's own, for outages that must not touch the shared one.

The server lives in a temporary directory (data, Unix socket and log) and listens on a
free loopback port. A test stops it as a crash would (`pg_ctl stop -m immediate`: no
checkpoint, every connection cut) and starts it again from the same data directory, on the
same port, so that clients configured with its URL find it again by themselves.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import _unavailable, free_port

__all__ = ["PrivatePostgres", "running_private_postgres"]

BINARIES = ("initdb", "pg_ctl", "postgres")
OS_USER = "postgres"  # PostgreSQL refuses to run as root: as root, the server runs as this user
START_TIMEOUT = 30.0  # seconds the server may take to accept connections
STOP_TIMEOUT = 20  # seconds `pg_ctl stop` waits for it to be gone
COMMAND_TIMEOUT = 60.0  # seconds any initdb or pg_ctl command may take before the test fails


class PrivatePostgres:
    """A PostgreSQL 'postgres' superuser with trust auth in `directory`, on 127.0.0.1:`port`.

    Nothing here is durable (fsync off): a crash (`crash`) loses nothing, since the operating
    system keeps what the server wrote; only a machine crash would, and no test makes one.
    """

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.data = directory / "data"
        self.log_path = directory / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None  # the postmaster, while it runs
        # As root, the commands run as the `postgres` OS user (uid, gid); else as ourselves.
        self._as = server_user()

    @property
    def url(self) -> str:
        """The maintenance database, as asyncpg (or libpq) takes it."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def database_url(self) -> str:
        """The same database as a SQLAlchemy asyncpg URL (the chat's `CHAT_DATABASE_URL`)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        user, group = self._as if self._as is not None else (None, None)
        result = subprocess.run(
            command,
            cwd=self.directory,  # a directory the server's user may enter (the caller's may not be)
            user=user,
            group=group,
            extra_groups=[] if self._as is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(command)} exited with {result.returncode}:\n"
                f"{result.stdout.decode(errors='replace')}\n{self.log()}"
            )

    def init(self) -> None:
        """Create the cluster: superuser `postgres`, trust auth (loopback and socket only)."""
        # --no-sync: nothing written by initdb needs to survive a machine crash either.
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        """Start the server and wait until it accepts connections (crash recovery included).

        `postgres` runs as our child, not daemonised by `pg_ctl start`: we know its PID, reap
        it once it exits (no zombie left behind) and can kill it ourselves if all else fails.
        """
        user, group = self._as if self._as is not None else (None, None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "postgres",
                    "-D",
                    str(self.data),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.directory),  # the Unix socket stays in our directory, not /var/run
                    # Speed only: nothing need survive a machine crash. A server crash loses
                    # nothing, since the operating system keeps what was written. (Not
                    # synchronous_commit=off: a commit would then wait for no WAL write, and
                    # the crash would lose what was committed, schema included.)
                    "-c",
                    "fsync=off",
                ],
                cwd=self.directory,
                user=user,
                group=group,
                extra_groups=[] if self._as is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # The postmaster writes "ready" as the PID file's 8th line once it accepts
        # connections, after any crash recovery: what `pg_ctl start -w` waits for too.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                lines = (self.data / "postmaster.pid").read_text().splitlines()
            except OSError:
                lines = []
            # (the first line is the PID: a file left by a killed server is not taken for ours)
            if len(lines) >= 8 and lines[0] == str(self.process.pid) and lines[7].strip() == "ready":
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start on port {self.port}:\n{self.log()}")
            time.sleep(0.05)

    def crash(self) -> None:
        """Stop the server at once, as a crash would: connections cut, no shutdown checkpoint."""
        assert self.process is not None
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", str(STOP_TIMEOUT))
        self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None

    def kill(self) -> None:
        """Last resort when `pg_ctl` could not stop it: SIGKILL the postmaster, our child, by its PID.

        Its own children notice that their postmaster died and exit by themselves.
        """
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            self.process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


def server_user() -> tuple[int, int] | None:
    """The uid and gid the server runs as: the `postgres` OS user's when we are root, else None (ours).

    Raises KeyError when we are root and there is no such user.
    """
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(OS_USER)
    return entry.pw_uid, entry.pw_gid


def running_private_postgres() -> Iterator[PrivatePostgres]:
    """A started PrivatePostgres, stopped and removed afterwards; skips (or fails) without PostgreSQL.

    `WIREHALL_REQUIRE_POSTGRES=1` turns a skip into a failure, as for the shared server.
    """
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        _unavailable(f"PostgreSQL's {', '.join(missing)} not on PATH", "WIREHALL_REQUIRE_POSTGRES")
    try:
        import asyncpg  # type: ignore[import-untyped]  # noqa: F401  # the chat's PostgreSQL driver
    except ImportError:
        _unavailable("asyncpg is not installed (pip install -e '.[examples]')", "WIREHALL_REQUIRE_POSTGRES")
    try:
        owner = server_user()
    except KeyError:
        _unavailable(
            f"running as root, with no {OS_USER!r} OS user to run PostgreSQL as", "WIREHALL_REQUIRE_POSTGRES"
        )
        raise  # not reached: _unavailable skips or fails
    # Not pytest's tmp_path: its parents are private to root (0700), so the server's user
    # could not reach a directory under them. /tmp is open to everybody.
    directory = Path(tempfile.mkdtemp(prefix="wirehall-postgres-"))
    try:
        if owner is not None:
            os.chown(directory, *owner)  # the server's user writes its data, socket and log here
        server = PrivatePostgres(directory, free_port())
        server.init()
        try:
            server.start()  # inside: a start that timed out may still have left a server running
            yield server
        finally:
            if server.process is not None:
                try:
                    server.crash()
                except (RuntimeError, subprocess.TimeoutExpired):
                    server.kill()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
