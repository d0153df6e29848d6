"""End to end, the failures: each exits 1 with one clear line on stderr, never a traceback,
never the token, and changes nothing.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keysync.devserver import DevServer, DevServerConfig

from coderlive import live_keys
from conftest import OWNER_TOKEN, Cli, Run

COLLECTIONS = {
    "coderd-keys": "/api/v2/aibridge/coderd-keys",
    "aibridge-keys": "/api/v2/aibridge/keys",
    "ai-gateway-keys": "/api/v2/ai-gateway/keys",
}
MEMBER_TOKEN = "memberTokn-0123456789abcdefABCDEF"
BAD_TOKEN = "unknownTkn-0123456789abcdefABCDEF"
SINK = Path("secrets/ai-gateway-keys.json")
MANIFEST = "version: 1\nkeys: [alpha, beta]\n"


def assert_one_line_error(run: Run, *tokens: str) -> str:
    """Exit 1, nothing on stdout, one `keysync: error:` line on stderr that leaks no token."""
    assert run.code == 1, run
    assert run.stdout == "", run
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run
    line = lines[0]
    assert line.startswith("keysync: error: "), run
    assert "Traceback" not in run.stderr
    assert "internal error" not in run.stderr
    for token in (OWNER_TOKEN, *tokens):
        assert token not in run.stderr
    return line


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def member_server() -> Iterator[DevServer]:
    config = DevServerConfig(port=0, token=OWNER_TOKEN, member_token=MEMBER_TOKEN)
    with DevServer(config) as server:
        yield server


# The manifest


def test_validation_errors_name_file_line_and_field_all_at_once_before_any_network_call(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest(
        "version: 1\n"  # 1
        "coderd:\n"  # 2
        "  api: auto\n"  # 3
        "  tokn: abc\n"  # 4: unknown field
        "policy:\n"  # 5
        "  max_deletes: many\n"  # 6: wrong type
        "keys:\n"  # 7
        "  - good-key\n"  # 8
        "  - Bad_Name\n"  # 9: invalid name
        "  - good-key\n",  # 10: duplicate
        name="gitops.yaml",
    )
    cli.env["CODER_URL"] = closed_port_url()

    for command in ("validate", "plan", "apply"):
        run = cli(command, "-f", "gitops.yaml", "--auto-approve" if command == "apply" else "-v")

        assert run.code == 1, run
        assert run.stdout == ""
        assert "Traceback" not in run.stderr
        assert "cannot reach" not in run.stderr, "the manifest is checked before any network call"
        stderr = run.stderr
        assert re.search(r"gitops\.yaml:4: coderd\.tokn: .*unknown field", stderr), stderr
        assert re.search(r"gitops\.yaml:6: policy\.max_deletes: .*'many'", stderr), stderr
        assert re.search(r"gitops\.yaml:9: keys\[1\]\S*: .*'Bad_Name'", stderr), stderr
        assert re.search(r"gitops\.yaml:10: keys\[2\]\S*: .*duplicate", stderr), stderr
    assert live_keys(dev_server) == {}


def test_a_duplicate_name_alone_names_its_line(cli: Cli) -> None:
    cli.write_manifest("version: 1\nkeys:\n  - alpha\n  - beta\n  - alpha\n")

    run = cli("validate")

    line = assert_one_line_error(run)
    assert re.search(r"keysync\.yaml:5: keys\[2\]\S*: .*duplicate", line), line


def test_a_missing_manifest_is_named(cli: Cli) -> None:
    run = cli("plan", "-f", "nowhere.yaml")

    line = assert_one_line_error(run)
    assert "nowhere.yaml" in line


def test_a_manifest_key_matching_ignore_is_a_validation_error(cli: Cli) -> None:
    cli.write_manifest("version: 1\npolicy:\n  ignore: ['legacy-*']\nkeys:\n  - legacy-one\n")

    run = cli("validate")

    line = assert_one_line_error(run)
    assert line.startswith("keysync: error: keysync.yaml:5: keys[0]"), line
    assert "ignore" in line


# Talking to Coder


def test_a_bad_token_is_one_line_without_a_traceback(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(MANIFEST)
    cli.env["CODER_SESSION_TOKEN"] = BAD_TOKEN

    for args in (("plan",), ("apply", "--auto-approve"), ("status",), ("export",)):
        run = cli(*args)

        line = assert_one_line_error(run, BAD_TOKEN)
        assert "401" in line
        assert "signed out" in line
        assert "API key is invalid." in line, "coderd's detail is shown"
        assert "CODER_SESSION_TOKEN" in line, "the user is told what to check"
    assert live_keys(dev_server) == {}
    assert not (cli.cwd / SINK).exists()


def test_no_token_at_all_is_explained(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(MANIFEST)
    del cli.env["CODER_SESSION_TOKEN"]

    run = cli("apply", "--auto-approve")

    line = assert_one_line_error(run)
    assert "CODER_SESSION_TOKEN" in line
    assert "--token-file" in line
    assert live_keys(dev_server) == {}


def test_a_token_file_replaces_the_environment(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(MANIFEST)
    del cli.env["CODER_SESSION_TOKEN"]
    (cli.cwd / "token").write_text(OWNER_TOKEN + "\n")
    (cli.cwd / "empty").write_text("")

    run = cli("apply", "--auto-approve", "--token-file", "token")
    empty = cli("plan", "--token-file", "empty")

    assert run.code == 0, run
    assert set(live_keys(dev_server)) == {"alpha", "beta"}
    line = assert_one_line_error(empty)
    assert "empty" in line


def test_an_unreachable_server_is_one_line(cli: Cli) -> None:
    url = closed_port_url()
    cli.write_manifest(MANIFEST)
    cli.env["CODER_URL"] = url

    run = cli("plan")

    line = assert_one_line_error(run)
    assert url in line
    assert "reach" in line


def test_plain_http_to_a_remote_host_is_refused(cli: Cli) -> None:
    cli.write_manifest(MANIFEST)

    run = cli("plan", "--url", "http://coder.example.com")

    line = assert_one_line_error(run)
    assert "https://" in line


@pytest.mark.parametrize("generation", ["coderd-keys", "ai-gateway-keys"])
def test_a_disabled_feature_is_reported(cli: Cli, generation: str) -> None:
    config = DevServerConfig(port=0, token=OWNER_TOKEN, api=generation, feature_disabled=True)
    cli.write_manifest(MANIFEST)
    with DevServer(config) as server:
        cli.env["CODER_URL"] = server.url

        runs = [cli("plan", "--api", generation), cli("apply", "--auto-approve")]

    for run in runs:
        line = assert_one_line_error(run)
        assert "403" in line
        assert "Premium feature" in line
    assert not (cli.cwd / SINK).exists()


def test_a_non_owner_token_is_forbidden(cli: Cli, member_server: DevServer) -> None:
    cli.write_manifest(MANIFEST)
    cli.env["CODER_URL"] = member_server.url
    cli.env["CODER_SESSION_TOKEN"] = MEMBER_TOKEN

    for args in (("plan",), ("apply", "--auto-approve"), ("status",)):
        run = cli(*args)

        line = assert_one_line_error(run, MEMBER_TOKEN)
        assert "403" in line
        assert "Forbidden." in line
        assert "owner" in line, "the user is told which token keysync needs"
    assert live_keys(member_server) == {}


def test_a_server_without_any_keys_api_is_reported(cli: Cli, dev_server: DevServer) -> None:
    # The serve endpoint's parent is no keys API: every generation answers 404 there.
    cli.write_manifest(MANIFEST)

    run = cli("plan", "--url", dev_server.url + "/nothing-here")

    line = assert_one_line_error(run)
    assert "404" in line
    assert live_keys(dev_server) == {}


# Saved plans that are not plans


def test_a_plan_file_that_is_missing_or_not_a_plan_is_refused(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(MANIFEST)
    (cli.cwd / "notes.json").write_text('{"hello": "world"}\n')
    (cli.cwd / "garbage.json").write_text("not json at all\n")

    for name in ("missing.json", "notes.json", "garbage.json"):
        run = cli("apply", name)

        line = assert_one_line_error(run)
        assert name in line
    assert live_keys(dev_server) == {}


# The sink


def test_an_unwritable_sink_stops_apply_before_the_first_create(cli: Cli, dev_server: DevServer) -> None:
    (cli.cwd / "not-a-directory").write_text("a file where the sink's directory should be\n")
    cli.write_manifest("version: 1\nsink:\n  path: not-a-directory/keys.json\nkeys: [alpha, beta]\n")

    run = cli("apply", "--auto-approve")

    line = assert_one_line_error(run)
    assert "not-a-directory" in line
    assert live_keys(dev_server) == {}, "no key is created whose secret could not be stored"


def test_a_corrupt_sink_file_is_reported_not_overwritten(cli: Cli, dev_server: DevServer) -> None:
    (cli.cwd / "secrets").mkdir()
    (cli.cwd / SINK).write_text("this is not json\n")
    cli.write_manifest(MANIFEST)

    for args in (("plan",), ("apply", "--auto-approve")):
        run = cli(*args)

        line = assert_one_line_error(run)
        assert str(SINK) in line
    assert (cli.cwd / SINK).read_text() == "this is not json\n"
    assert live_keys(dev_server) == {}


# Odd inputs: one line each, never "internal error"


def test_a_duration_over_100_years_in_the_manifest_is_a_validation_error(cli: Cli) -> None:
    cli.write_manifest("version: 1\npolicy:\n  rotate_after: 99999999999999999999999d\nkeys: [alpha]\n")
    line = assert_one_line_error(cli("validate"))
    assert "keysync.yaml:3: policy.rotate_after: '99999999999999999999999d' is more than 100 years" in line

    cli.write_manifest("version: 1\nkeys:\n  - name: alpha\n    rotate_after: 5300w\n")
    line = assert_one_line_error(cli("plan"))
    assert "keysync.yaml:4: keys[0].rotate_after: '5300w' is more than 100 years" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("apply", "--auto-approve", "--lock-timeout", "99999999999999999999w"), "--lock-timeout: "),
        (("apply", "--auto-approve", "--lock-timeout", "36526d"), "is more than 100 years"),
        (("watch", "--interval", "9" * 400 + "s"), "--interval: "),
        (("watch", "--listen", "127.0.0.1:65536"), "port 65536 is above 65535"),
        (("watch", "--listen", "127.0.0.1:99999999999999999999999"), "is above 65535"),
        (("plan", "--timeout", "inf"), "--timeout"),
        (("plan", "--timeout", "nan"), "nan is not a number of seconds"),
        (("plan", "--timeout", "1e400"), "--timeout"),
        (("plan", "--timeout", "2d"), "is not between 0.1s and 86400s (a day)"),
        (("plan", "--timeout", "soon"), "'soon' is neither a number of seconds nor a duration such as 2m"),
        (("plan", "--url", "https://a..b"), "'a..b' is not a valid host name"),
        (("plan", "--url", "https://xn--.example"), "is not a valid host name"),
        (("plan", "--url", f"https://{'a' * 64}.example"), "is not a valid host name"),
        (("plan", "--token-file", "/dev/zero"), "larger than 64 KiB, so not a token"),
        (("plan", "--target", "a\x1b[2Jb"), "--target 'a\\x1b[2Jb' is not a valid key name"),
        (("apply", "--replace", "al\npha"), "--replace 'al\\npha' is not a valid key name"),
        (("plan", "-f", "k\x1b]0;owned\x07.yaml"), "k\\x1b]0;owned\\x07.yaml: no such file"),
    ],
)
def test_odd_command_line_values_are_one_usage_error(
    cli: Cli, dev_server: DevServer, args: tuple[str, ...], expected: str
) -> None:
    cli.write_manifest(MANIFEST)

    line = assert_one_line_error(cli(*args))

    assert expected in line
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", line), "no control character reaches the terminal"
    assert live_keys(dev_server) == {}


def damage(document: dict[str, Any], how: str) -> str:
    """The saved plan's text, damaged in one way."""
    if how == "truncated":
        return json.dumps(document)[:120]
    if how == "deeply nested":
        return "[" * 100_000
    changed = copy.deepcopy(document)
    if how == "targets not a list":
        changed["targets"] = 5
    elif how == "stale_records of mixed types":
        changed["stale_records"] = [1, "alpha"]
    elif how == "an action not an object":
        changed["actions"][0] = ["create", "alpha"]
    elif how == "a number for a name":
        changed["actions"][0]["name"] = 7
    elif how == "snapshot records not objects":
        changed["snapshot"]["live"] = {"alpha": [1, 2]}
    elif how == "the plan wrapped in a list":
        return json.dumps([changed])
    elif how == "control characters in an id":
        changed["snapshot"]["live"]["alpha"]["id"] = "\x1b[2J\x1b]0;owned\x07"
    return json.dumps(changed)


DAMAGES = {
    "truncated": "not a readable keysync plan",
    "deeply nested": "nested too deeply",
    "targets not a list": "targets: not a list of strings",
    "stale_records of mixed types": "stale_records: not a list of strings",
    "an action not an object": "actions[0]: not an object",
    "a number for a name": "actions[0].name: not a string",
    "snapshot records not objects": "snapshot.live.alpha: not an object of strings",
    "the plan wrapped in a list": "not a keysync plan (format_version 1)",
    "control characters in an id": "snapshot.live.alpha.id: holds a control character",
}


def test_a_damaged_plan_file_is_one_line_and_changes_nothing(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(MANIFEST)
    assert cli("apply", "--auto-approve").code == 0
    before = live_keys(dev_server)
    assert cli("plan", "--replace", "alpha", "--out", "plan.json").code == 0
    document = json.loads((cli.cwd / "plan.json").read_text())

    for how, expected in DAMAGES.items():
        (cli.cwd / "damaged.json").write_text(damage(document, how))
        line = assert_one_line_error(cli("apply", "damaged.json"))
        assert line.startswith("keysync: error: damaged.json: ") and expected in line, (how, line)
        assert "\x1b" not in line
    assert live_keys(dev_server) == before


@pytest.mark.parametrize("timeout", ["2m", "45s", "12.5"])
def test_timeout_takes_seconds_or_a_duration(cli: Cli, dev_server: DevServer, timeout: str) -> None:
    cli.write_manifest(MANIFEST)
    run = cli("plan", "--timeout", timeout)
    assert run.code == 0, run
