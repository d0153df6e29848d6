"""Runs the installed keysync's console entry point in a forked child of a process that has
imported keysync once, so that each of the suite's thousand CLI runs costs a fork rather than
half a second of imports.

Each run is still its own process: its own pid, arguments, environment, working directory,
stdin, stdout and stderr (passed as file descriptors), signals and exit code; it ends through
the interpreter's normal exit, flushing its streams and joining its threads. What it does not
repeat is the import of keysync, which the tests of the entry point (`test_entry.py`), the
packaging tests and every test that starts `keysync` with `subprocess.Popen` still measure
on the real command. `KEYSYNC_TEST_EXEC=installed` makes every run start the installed
command instead; so does measuring coverage.

The server is single-threaded (it forks) and one runs per pytest worker."""

from __future__ import annotations

import contextlib
import json
import os
import pkgutil
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FDS = 3  # stdin, stdout, stderr


@dataclass(frozen=True)
class Finished:
    code: int
    stdout: str
    stderr: str


def wanted() -> bool:
    if os.environ.get("KEYSYNC_TEST_EXEC") == "installed":
        return False
    return not any(name.startswith("COVERAGE_") for name in os.environ)  # coverage follows exec only


class ForkServer:
    """The test side: starts the server and asks it for runs."""

    def __init__(self, keysync: str) -> None:
        self._keysync = keysync
        self._directory = tempfile.mkdtemp(prefix="keysync-forkserver-")
        self._path = os.path.join(self._directory, "socket")
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        self._process = subprocess.Popen(
            [sys.executable, __file__, self._path, keysync],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline() != b"ready\n":
            raise RuntimeError("the keysync fork server did not start")

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        Path(self._path).unlink(missing_ok=True)
        os.rmdir(self._directory)

    def spawn(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        fds: tuple[int, int, int],
        *,
        umask: int | None = None,
        default_sigint: bool = False,
    ) -> Forked:
        """A run in the background, as `subprocess.Popen` starts one: stdin, stdout and stderr
        are the descriptors given (this process keeps its own copies); `default_sigint`: Python's
        own SIGINT handler even if this process ignores SIGINT (a run started from a terminal)."""
        request = {
            "args": args,
            "cwd": str(cwd),
            "env": env,
            "umask": umask,
            "default_sigint": default_sigint,
        }
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(self._path)
        socket.send_fds(connection, [json.dumps(request).encode()], list(fds))
        return Forked([self._keysync, *args], connection, int(_line(connection)))

    def popen(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        streams: tuple[Stream, Stream, Stream],
        *,
        text: bool = False,
        umask: int | None = None,
        default_sigint: bool = False,
    ) -> Forked:
        """`spawn` with streams as `subprocess.Popen` takes them: None (this process's own),
        DEVNULL, PIPE (then on the result's stdin, stdout or stderr), a file or a descriptor."""
        child_fds: list[int] = []
        ours: list[int] = []
        pipes: list[IO[Any] | None] = []
        for target, stream in enumerate(streams):
            if stream == subprocess.PIPE:
                read, write = os.pipe()
                child, mine = (read, write) if target == 0 else (write, read)
                ours.append(child)
                pipes.append(open(mine, ("w" if target == 0 else "r") + ("" if text else "b")))  # noqa: SIM115
            else:
                child = _descriptor(stream, target)
                pipes.append(None)
            child_fds.append(child)
        try:
            forked = self.spawn(
                args,
                cwd,
                env,
                (child_fds[0], child_fds[1], child_fds[2]),
                umask=umask,
                default_sigint=default_sigint,
            )
        finally:
            for fd in ours:
                os.close(fd)
        forked.stdin, forked.stdout, forked.stderr = pipes
        return forked

    def run(
        self, args: list[str], cwd: Path, env: dict[str, str], input: str | None, timeout: float
    ) -> Finished:
        """A run to its end, as `subprocess.run` with captured output makes one."""
        pipe = subprocess.PIPE
        forked = self.popen(args, cwd, env, (pipe if input is not None else None, pipe, pipe))

        def feed(stream: IO[Any]) -> None:  # beside the reading, as a big input may fill the pipe
            with stream, contextlib.suppress(BrokenPipeError):
                stream.write((input or "").encode())

        if forked.stdin is not None:
            threading.Thread(target=feed, args=(forked.stdin,), daemon=True).start()
        try:
            stdout, stderr = forked.communicate(timeout)
        except subprocess.TimeoutExpired:
            forked.kill()
            forked.wait()  # its readers end with it
            raise
        return Finished(forked.wait(), stdout.decode(), stderr.decode())


Stream = int | IO[Any] | None


def _descriptor(stream: Stream, target: int) -> int:
    if stream is None:
        return target  # this process's own stdin, stdout or stderr
    if stream == subprocess.DEVNULL:
        return _DEVNULL[target]
    return stream if isinstance(stream, int) else stream.fileno()


_DEVNULL = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)] + [
    os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
] * 2


class Forked:
    """A run in the background: what tests use of `subprocess.Popen`."""

    def __init__(self, args: list[str], connection: socket.socket, pid: int) -> None:
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self.stdin: IO[Any] | None = None
        self.stdout: IO[Any] | None = None
        self.stderr: IO[Any] | None = None
        self._connection = connection

    def poll(self) -> int | None:
        if self.returncode is None:
            readable, _, _ = select.select([self._connection], [], [], 0)
            if readable:
                self._finish()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._connection.settimeout(timeout)
            try:
                self._finish()
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
        assert self.returncode is not None
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[Any, Any]:
        """The rest of stdout and stderr (those that are pipes), once the run has ended."""
        read: dict[str, Any] = {}

        def drain(name: str, stream: IO[Any]) -> None:
            with stream:
                read[name] = stream.read()

        readers = [
            threading.Thread(target=drain, args=(name, stream))
            for name, stream in (("out", self.stdout), ("err", self.stderr))
            if stream is not None
        ]
        for reader in readers:
            reader.start()
        self.wait(timeout)
        for reader in readers:
            reader.join()
        return read.get("out"), read.get("err")

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _finish(self) -> None:
        self.returncode = int(_line(self._connection))
        self._connection.close()


def _line(connection: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(64)
        if not chunk:
            raise RuntimeError("the keysync fork server went away")
        data += chunk
    return data.decode()


# --- the server ------------------------------------------------------------------------------------


def _preload() -> None:
    """Imports what the commands import, as far as importing has no effect of its own."""
    from keysync.cli.entry import skip_httpx_command_line

    skip_httpx_command_line()  # as the entry point does, before anything imports httpx
    import keysync

    skipped = ("keysync.__main__", "keysync.moved")
    for module in pkgutil.walk_packages(keysync.__path__, "keysync."):
        if not module.name.startswith(skipped):
            __import__(module.name)


def serve(path: str, keysync: str) -> None:
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    running: dict[int, socket.socket] = {}
    while True:
        readable, _, _ = select.select([listener], [], [], 0.005 if running else None)
        if readable:
            connection, _ = listener.accept()
            pid = _start(connection, listener, keysync)
            connection.sendall(f"{pid}\n".encode())
            running[pid] = connection
        _reap(running)


def _start(connection: socket.socket, listener: socket.socket, keysync: str) -> int:
    request, fds, _, _ = socket.recv_fds(connection, 1 << 20, FDS)
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    listener.close()
    connection.close()
    _become(json.loads(request), fds, keysync)  # never returns
    raise AssertionError


def _become(request: dict[str, Any], fds: list[int], keysync: str) -> None:
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(str(request["cwd"]))
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if request.get("default_sigint"):  # as a fresh interpreter whose SIGINT was not ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if request.get("umask") is not None:
        os.umask(request["umask"])
    random.seed()  # as a fresh interpreter would, not the server's sequence in every run
    sys.path[0] = os.path.dirname(keysync)  # a console script's, not this file's directory
    sys.argv = [keysync, *request["args"]]
    from keysync.cli.entry import main

    sys.exit(main())  # the interpreter's own exit: streams flushed, threads joined


def _reap(running: dict[int, socket.socket]) -> None:
    for pid in list(running):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            connection = running.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                connection.sendall(f"{code}\n".encode())
            connection.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
