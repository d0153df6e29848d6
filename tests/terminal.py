"""keysync on a pseudo-terminal: the confirmation prompt, answered."""

from __future__ import annotations

import os
import pty
import subprocess

from conftest import CAPTURED, KEYSYNC, Cli, Run


def run_on_a_terminal(cli: Cli, answer: str, *args: str) -> Run:
    """Runs keysync with a pseudo-terminal as stdin (stdout and stderr stay pipes) and answers."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [KEYSYNC, *args],
            cwd=cli.cwd,
            env=cli.env,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(terminal)
        terminal = -1
        os.write(controller, answer.encode())
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    run = Run(list(args), process.returncode, stdout, stderr)
    cli.runs.append(run)
    CAPTURED.append(stdout + stderr)
    return run
