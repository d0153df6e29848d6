"""The `exec` sink: a command of the user's receives each record as JSON on its stdin.

No shell is involved: `command` is a list. It runs in the manifest's directory, its stdout is
discarded, its stderr is shown only when it fails, with the secret masked. Exit 0 means stored.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path

from keysync.errors import SinkError
from keysync.keys import SecretRecord, SinkView
from keysync.manifest.sinks import ExecSinkConfig
from keysync.plan import Action
from keysync.secret import Secret, mask
from keysync.sinks.base import SinkContext
from keysync.sinks.durable import probe_writable, record_size, size_of
from keysync.sinks.execjournal import JOURNAL, DeliveryJournal
from keysync.sinks.lock import file_lock

_STDERR_LINES = 5
_STDERR_LINE_CHARS = 200
_REAP_SECONDS = 5.0


class ExecSink:
    concurrent_writes = True
    config_model = ExecSinkConfig

    def __init__(self, config: ExecSinkConfig, context: SinkContext) -> None:
        self._command = list(config.command)
        self._remove_command = list(config.remove_command) if config.remove_command else None
        self._context = context
        self._ids: dict[str, str] = {}  # key ids seen this run, for remove_command
        self._guard = threading.Lock()
        self._journal = DeliveryJournal(context.base_dir / JOURNAL, context.coderd_url)

    def describe(self) -> str:
        return f"exec {shlex.join(self._command)}"

    def local_paths(self) -> list[Path]:
        return [self._journal.path]

    def lock(self, timeout: float | None) -> AbstractContextManager[None]:
        path = self._journal.path
        return file_lock(path.with_name(path.name + ".lock"), timeout)

    def read(self) -> SinkView:
        """Never runs a command: what the journal says was delivered is all plan learns."""
        return SinkView({}, readable=False, delivered=self._journal.delivered())

    def check_ready(self) -> None:
        """What plan may check: the programs exist (none is run) and the journal is readable."""
        for command in (self._command, self._remove_command):
            if command is not None:
                self._executable(command[0])
        self._journal.delivered()

    def check_writable(self) -> None:
        self.check_ready()  # a damaged journal or a missing program shows before any change
        journal = self._journal.path
        try:
            probe_writable(journal.parent, size_of(journal) + record_size(self._context.coderd_url))
        except SinkError as exc:
            raise SinkError(f"exec sink: its journal {journal} cannot be written: {exc}") from None

    def prepare(self, actions: Sequence[Action]) -> dict[str, str]:
        """Journals, before any key is touched, the names this apply hands over that the journal
        does not know yet: a new name is held by no key; a replaced one by the key it replaces
        (what plan assumed). A delivery cut short then shows as `secret-missing`."""
        assumed = {
            action.name: action.live.id if action.live is not None else ""
            for action in actions
            if action.action in ("create", "replace")
        }
        self._journal.expect(assumed)
        return {}

    def store(self, record: SecretRecord) -> None:
        self._journal.handed(record)
        self._run(self._command, record.document(), f"storing key {record.name!r}", [record.key])
        self._journal.confirmed(record)
        with self._guard:
            self._ids[record.name] = record.id

    def remove(self, name: str, key_id: str = "") -> None:
        if self._remove_command is not None:
            with self._guard:
                key_id = key_id or self._ids.pop(name, "")
            document = {"name": name, "id": key_id, "coderd_url": self._context.coderd_url}
            self._run(self._remove_command, document, f"removing key {name!r}", [])
        self._journal.forget(name)

    def close(self) -> None:
        self._journal.close()

    def _run(self, command: list[str], document: dict[str, str], doing: str, secrets: list[Secret]) -> None:
        argv = [self._executable(command[0]), *command[1:]]
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=self._context.base_dir,
                env=_command_environment(self._context.env),
                start_new_session=True,  # so a timeout kills whatever the command started too
            )
        except OSError as exc:
            raise SinkError(f"exec sink: cannot run {command[0]!r} {doing}: {exc.strerror}") from None
        try:
            _, stderr = process.communicate(json.dumps(document).encode(), timeout=self._context.timeout)
        except subprocess.TimeoutExpired:
            _kill(process)
            raise SinkError(
                f"exec sink: {command[0]!r} {doing} did not finish within "
                f"{self._context.timeout:g}s and was killed"
            ) from None
        if process.returncode != 0:
            raise SinkError(
                f"exec sink: {command[0]!r} failed {doing} ({_exit(process.returncode)})"
                + _stderr_excerpt(stderr, secrets)
            )

    def _executable(self, program: str) -> str:
        """The program to run: a path (relative to the manifest's directory) or a name on PATH."""
        if os.sep in program:
            path = self._context.resolve(program)
            if path.is_file() and os.access(path, os.X_OK):
                return str(path.absolute())
            raise SinkError(f"exec sink: {program!r} ({path}) is not an executable file")
        found = shutil.which(program, path=self._context.env.get("PATH") or os.environ.get("PATH"))
        if found is None:
            raise SinkError(f"exec sink: {program!r} is not found on PATH")
        return found


def _kill(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=_REAP_SECONDS)


def _exit(code: int) -> str:
    if code < 0:
        with suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _stderr_excerpt(stderr: bytes, secrets: list[Secret]) -> str:
    # Mask before cutting, so that no cut leaves a piece of a secret unmasked.
    text = mask(stderr.decode("utf-8", errors="replace"), secrets)
    lines = [line.strip()[:_STDERR_LINE_CHARS] for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    more = " ..." if len(lines) > _STDERR_LINES else ""
    return ": " + " | ".join(lines[:_STDERR_LINES]) + more


_WITHHELD = ("CODER_SESSION_TOKEN", "VAULT_TOKEN")


def _command_environment(env: Mapping[str, str]) -> dict[str, str]:
    """keysync's environment less its own credentials: the command gets the record, not the keys
    to the deployment."""
    return {name: value for name, value in (env or os.environ).items() if name not in _WITHHELD}
