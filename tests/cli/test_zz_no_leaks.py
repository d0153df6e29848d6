"""No secret and no session token ever appears in keysync's output or plan files.

Runs last in its pytest-xdist worker: conftest's pytest_collection_modifyitems moves this module
to the end of the collection. Since xdist spreads modules over workers, this module does not rely
on the others: it runs a full scenario of its own, collects every output and plan file, reads the
secrets back from the sink, and checks that none of them leaked. Its last test then sweeps
everything this worker captured (conftest.CAPTURED) for the owner token, for every secret found in
this worker's temporary files, and for anything shaped like a secret.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from keysync.devserver import DevServer

from conftest import CAPTURED, OWNER_TOKEN, Cli

SINK = Path("secrets/ai-gateway-keys.json")
BAD_TOKEN = "wrongToken-0123456789abcdefABCDEF"
# Coder's secrets are 43 characters of [0-9A-Za-z]; key names are lowercase, so a run of 43
# alphanumerics with an upper-case letter in it is a secret, whoever printed it.
SECRET_SHAPED = re.compile(r"(?<![0-9A-Za-z])(?=[0-9a-z]*[A-Z])[0-9A-Za-z]{43}(?![0-9A-Za-z])")


def sink_secrets(path: Path) -> set[str]:
    document: dict[str, Any] = json.loads(path.read_text())
    return {record["key"] for record in document["keys"].values()}


def assert_no_leak(texts: dict[str, str], secrets: set[str], tokens: tuple[str, ...]) -> None:
    for where, text in texts.items():
        for token in tokens:
            assert token not in text, f"a session token leaked into {where}"
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:11]}...) leaked into {where}"
        shaped = SECRET_SHAPED.findall(text)
        assert not shaped, f"something shaped like a secret ({shaped[0][:11]}...) is in {where}"


def outputs(cli: Cli) -> dict[str, str]:
    return {
        f"keysync {' '.join(run.args)} (run {i})": run.stdout + run.stderr for i, run in enumerate(cli.runs)
    }


def test_a_full_scenario_leaks_no_secret_and_no_token(cli: Cli, dev_server: DevServer) -> None:
    seen: set[str] = set()
    sink = cli.cwd / SINK

    def ok(*args: str) -> None:
        run = cli(*args)
        assert run.code == 0, run

    def failing(*args: str) -> None:
        run = cli(*args)
        assert run.code == 1, run

    # Create, through a saved plan, then look at the world every way there is.
    cli.write_manifest("version: 1\nkeys: [alpha, beta, gamma]\n")
    ok("validate")
    ok("plan", "-v")
    ok("plan", "--out", "create.json", "--format", "json")
    ok("apply", "create.json", "-v")
    seen |= sink_secrets(sink)
    ok("apply", "--auto-approve")
    for fmt in ("text", "json", "markdown"):
        ok("plan", "--format", fmt, "-v")
    ok("status", "-v")
    ok("status", "--format", "json")
    ok("export", "-v")

    # A stale sink: alpha's record holds beta's secret. Plan says so, apply repairs it.
    document = json.loads(sink.read_text())
    document["keys"]["alpha"]["key"] = document["keys"]["beta"]["key"]
    sink.write_text(json.dumps(document))
    for fmt in ("text", "json", "markdown"):
        ok("plan", "--format", fmt)
    ok("apply", "--auto-approve", "--format", "json", "-v")
    seen |= sink_secrets(sink)

    # A requested replace through a saved plan, and a delete.
    ok("plan", "--replace", "gamma", "--out", "replace.json")
    ok("apply", "replace.json", "--format", "json")
    seen |= sink_secrets(sink)
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    ok("plan", "--format", "markdown")
    ok("apply", "--auto-approve", "-v")
    seen |= sink_secrets(sink)
    ok("status")

    # Failures: a stale saved plan, guards, a bad token, a manifest holding a token.
    ok("plan", "--replace", "alpha", "--out", "stale.json")
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    failing("apply", "stale.json", "-v")
    cli.write_manifest("version: 1\npolicy:\n  max_deletes: 0\nkeys: [alpha]\n")
    failing("apply", "--auto-approve", "-v")
    failing("apply", "--auto-approve", "--replace", "beta", "--target", "nothing")
    cli.env["CODER_SESSION_TOKEN"] = BAD_TOKEN
    failing("plan", "-v")
    failing("apply", "--auto-approve", "-v")
    cli.env["CODER_SESSION_TOKEN"] = OWNER_TOKEN
    cli.write_manifest(
        f"version: 1\ncoderd:\n  api: {OWNER_TOKEN}\n  token: {OWNER_TOKEN}\n"
        "keys:\n  - name: alpha\n    key: redacted-by-nobody\n"
    )
    failing("validate", "-v")
    failing("plan", "-v")

    assert len(seen) == 5, "three keys created, alpha and gamma replaced"
    texts = outputs(cli)
    for name in ("create.json", "replace.json", "stale.json"):
        texts[name] = (cli.cwd / name).read_text()
    assert_no_leak(texts, seen, (OWNER_TOKEN, BAD_TOKEN))


def test_directory_and_env_sinks_leak_nothing(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(
        "version: 1\nsink:\n  type: directory\n  path: keys.d\nkeys: [alpha, beta]\n", name="dir.yaml"
    )
    cli.write_manifest(
        "version: 1\nsink:\n  path: keys.env\n  format: env\nkeys: [gamma]\n"
        "policy:\n  ignore: [alpha, beta]\n",
        name="env.yaml",
    )
    for manifest, key in (("dir.yaml", "alpha"), ("env.yaml", "gamma")):
        for args in (("apply", "--auto-approve", "-v"), ("plan", "--replace", key, "--format", "json")):
            run = cli(*args, "-f", manifest)
            assert run.code == 0, run
        for fmt in ("text", "json"):
            assert cli("status", "-f", manifest, "--format", fmt).code == 0
    directory = cli.cwd / "keys.d"
    seen = {(directory / name).read_text() for name in ("alpha", "beta")}
    env_lines = (cli.cwd / "keys.env").read_text().splitlines()
    seen |= {line.split("=", 1)[1] for line in env_lines if not line.startswith("#")}
    assert all(len(secret) == 43 for secret in seen) and len(seen) == 3
    texts = outputs(cli)
    texts[".keysync.json"] = (directory / ".keysync.json").read_text()
    assert_no_leak(texts, seen, (OWNER_TOKEN,))


def test_a_secret_pasted_into_the_manifest_is_not_echoed(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    assert cli("apply", "--auto-approve").code == 0
    (secret,) = sink_secrets(cli.cwd / SINK)
    # A gateway key pasted where a key name belongs, and where a duration belongs.
    cli.write_manifest(f"version: 1\npolicy:\n  rotate_after: {secret}\nkeys:\n  - {secret}\n")

    run = cli("validate")

    assert run.code == 1, run
    assert "keysync.yaml:3" in run.stderr and "keysync.yaml:5" in run.stderr, run
    assert_no_leak(outputs(cli), {secret}, (OWNER_TOKEN,))


def secrets_in_files(root: Path) -> set[str]:
    """Every secret-shaped string in the files under root: what this worker's sinks received."""
    found: set[str] = set()
    for path in root.rglob("*"):
        if "site-packages" in path.parts:
            continue
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 16:
                found.update(SECRET_SHAPED.findall(path.read_text(errors="replace")))
        except OSError:
            continue
    return found


def test_nothing_this_worker_captured_leaks(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs last in its worker: every keysync output any test captured, checked at once."""
    seen = secrets_in_files(tmp_path_factory.getbasetemp())
    texts = {f"captured output {i}": text for i, text in enumerate(CAPTURED)}
    if not texts:
        pytest.skip("no keysync output was captured in this worker")
    assert_no_leak(texts, seen, (OWNER_TOKEN,))
