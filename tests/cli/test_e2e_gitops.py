"""End to end, the GitOps safety net: saved plans, guards, policy, targeting, rotation, git.

Every refusal is checked the same way: exit 1, a message that names the cause, and the keys
Coder lists unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from keysync.devserver import DevServer, DevServerConfig

from coderlive import create_out_of_band, live_keys
from conftest import OWNER_TOKEN, Cli
from replica import IN, gateway_status

COLLECTIONS = {
    "coderd-keys": "/api/v2/aibridge/coderd-keys",
    "aibridge-keys": "/api/v2/aibridge/keys",
    "ai-gateway-keys": "/api/v2/ai-gateway/keys",
}
SINK = Path("secrets/ai-gateway-keys.json")


def ids(server: DevServer) -> dict[str, str]:
    return {name: key["id"] for name, key in live_keys(server).items()}


def use(server: DevServer, secret: str) -> None:
    """Play a gateway replica connecting with this secret: Coder records its heartbeat."""
    assert gateway_status(server.url, secret) == IN


def sink_secrets(cli: Cli) -> dict[str, str]:
    document = json.loads((cli.cwd / SINK).read_text())
    return {name: record["key"] for name, record in document["keys"].items()}


def apply(cli: Cli, *args: str) -> None:
    run = cli("apply", "--auto-approve", *args)
    assert run.code == 0, run


def plan_json(cli: Cli, *args: str) -> dict[str, Any]:
    run = cli("plan", "--format", "json", *args)
    assert run.code == 0, run
    document: dict[str, Any] = json.loads(run.stdout)
    return document


def actions_of(plan: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(a["action"], a["name"], a["reason"]) for a in plan["actions"]]


def plan_actions(cli: Cli, *args: str) -> list[tuple[str, str, str]]:
    return actions_of(plan_json(cli, *args))


def assert_refused(run: Any, *words: str) -> None:
    assert run.code == 1, run
    assert "Traceback" not in run.stderr
    for word in words:
        assert word in run.stderr, run


# Saved plans


def test_a_saved_plan_is_applied_without_a_question_and_only_once(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")

    saved = cli("plan", "--out", "plan.json")

    assert saved.code == 0, saved
    assert live_keys(dev_server) == {}
    document = json.loads((cli.cwd / "plan.json").read_text())
    assert document["format_version"] == 1
    assert document["summary"] == {"create": 2, "delete": 0, "replace": 0, "rotate": 0, "retire": 0}

    run = cli("apply", "plan.json", input="")

    assert run.code == 0, run
    assert set(live_keys(dev_server)) == {"alpha", "beta"}
    assert set(sink_secrets(cli)) == {"alpha", "beta"}

    before = ids(dev_server)
    again = cli("apply", "plan.json", input="")
    assert_refused(again, "alpha")
    assert ids(dev_server) == before


def test_a_saved_plan_is_refused_after_a_key_was_created_out_of_band(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    assert cli("plan", "--out", "plan.json").code == 0
    create_out_of_band(dev_server, "intruder")

    run = cli("apply", "plan.json")

    assert_refused(run, "intruder")
    assert set(live_keys(dev_server)) == {"intruder"}
    assert not (cli.cwd / SINK).exists()


def test_a_saved_plan_is_refused_after_the_manifest_changed(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    assert cli("plan", "--out", "plan.json").code == 0
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")

    run = cli("apply", "plan.json")

    assert_refused(run, "manifest")
    assert live_keys(dev_server) == {}


def test_a_saved_plan_is_refused_after_the_sink_changed(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    before = ids(dev_server)
    assert cli("plan", "--replace", "alpha", "--out", "plan.json").code == 0
    document = json.loads((cli.cwd / SINK).read_text())
    del document["keys"]["beta"]
    (cli.cwd / SINK).write_text(json.dumps(document))

    run = cli("apply", "plan.json")

    assert_refused(run, "sink", "beta")
    assert ids(dev_server) == before


def test_a_saved_plan_is_refused_against_another_coderd(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    assert cli("plan", "--out", "plan.json").code == 0

    with DevServer(DevServerConfig(port=0, token=OWNER_TOKEN)) as other:
        run = cli("apply", "plan.json", "--url", other.url)
        other_keys = live_keys(other)

    assert_refused(run, dev_server.url)
    assert other_keys == {}
    assert live_keys(dev_server) == {}


def test_a_saved_plan_survives_keys_being_used(cli: Cli, dev_server: DevServer) -> None:
    # last_heartbeat_at (last_used_at on older servers) moves while replicas run; it must not make saved
    # plans stale.
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    before = ids(dev_server)
    secrets = sink_secrets(cli)
    assert cli("plan", "--replace", "alpha", "--out", "plan.json").code == 0
    use(dev_server, secrets["alpha"])
    use(dev_server, secrets["beta"])

    run = cli("apply", "plan.json")

    assert run.code == 0, run
    after = ids(dev_server)
    assert after["alpha"] != before["alpha"]
    assert after["beta"] == before["beta"]


def test_apply_planfile_refuses_extra_target_or_replace(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    assert cli("plan", "--out", "plan.json").code == 0

    for flag in ("--target", "--replace"):
        run = cli("apply", "plan.json", flag, "alpha")

        assert_refused(run, flag)
    assert live_keys(dev_server) == {}


def test_a_saved_plan_keeps_its_target_and_replace(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta, gamma]\n")
    apply(cli, "--target", "alpha", "--target", "beta")
    before = ids(dev_server)
    assert cli("plan", "--replace", "alpha", "--target", "alpha", "--out", "plan.json").code == 0

    run = cli("apply", "plan.json")

    assert run.code == 0, run
    after = ids(dev_server)
    assert set(after) == {"alpha", "beta"}, "gamma was outside the saved plan's target"
    assert after["alpha"] != before["alpha"]
    assert after["beta"] == before["beta"]


def test_the_plan_file_holds_no_secret(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    secrets = sink_secrets(cli)
    cli.write_manifest("version: 1\nkeys: [beta, gamma]\n")

    run = cli("plan", "--replace", "beta", "--out", "plan.json")

    assert run.code == 0, run
    text = (cli.cwd / "plan.json").read_text()
    assert live_keys(dev_server)["beta"]["key_prefix"] in text
    for secret in secrets.values():
        assert secret not in text
    assert OWNER_TOKEN not in text
    assert sorted((a["action"], a["name"]) for a in json.loads(text)["actions"]) == [
        ("create", "gamma"),
        ("delete", "alpha"),
        ("replace", "beta"),
    ]


# Markdown


def test_markdown_names_every_action(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta, gamma]\n")
    apply(cli)
    live = live_keys(dev_server)
    cli.write_manifest("version: 1\nkeys: [beta, gamma, delta]\n")

    run = cli("plan", "--format", "markdown", "--replace", "beta")

    assert run.code == 0, run
    rows = [line for line in run.stdout.splitlines() if line.startswith("|")]
    by_name = {name: [row for row in rows if f"`{name}`" in row] for name in ("alpha", "beta", "delta")}
    assert all(len(found) == 1 for found in by_name.values()), run.stdout
    assert "delete" in by_name["alpha"][0] and "not-in-manifest" in by_name["alpha"][0]
    assert live["alpha"]["key_prefix"] in by_name["alpha"][0]
    assert "replace" in by_name["beta"][0] and "requested" in by_name["beta"][0]
    assert "create" in by_name["delta"][0] and "missing" in by_name["delta"][0]
    assert not [row for row in rows if "`gamma`" in row]
    assert "1 to create, 1 to delete, 1 to replace" in run.stdout


# Guards


def test_max_deletes_refuses_without_force_and_yields_to_it(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\npolicy:\n  max_deletes: 1\nkeys: [alpha, beta, gamma]\n")
    apply(cli)
    before = ids(dev_server)
    cli.write_manifest("version: 1\npolicy:\n  max_deletes: 1\nkeys: [gamma]\n")

    assert any("max_deletes" in warning for warning in plan_json(cli)["warnings"])
    refused = cli("apply", "--auto-approve")

    assert_refused(refused, "max_deletes", "--force")
    assert ids(dev_server) == before

    forced = cli("apply", "--auto-approve", "--force")

    assert forced.code == 0, forced
    assert ids(dev_server) == {"gamma": before["gamma"]}
    assert set(sink_secrets(cli)) == {"gamma"}


def test_max_deletes_counts_replaces(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\npolicy:\n  max_deletes: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    before = ids(dev_server)
    for secret in sink_secrets(cli).values():  # replicas use them, so replacing them counts
        use(dev_server, secret)
    (cli.cwd / SINK).unlink()

    refused = cli("apply", "--auto-approve")

    assert_refused(refused, "max_deletes")
    assert ids(dev_server) == before
    assert cli("apply", "--auto-approve", "--force").code == 0
    after = ids(dev_server)
    assert set(after) == {"alpha", "beta"}
    assert not set(after.values()) & set(before.values())


def test_an_empty_manifest_refuses_to_delete_everything_without_force(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    before = ids(dev_server)

    for empty in ("version: 1\npolicy:\n  prune: true\nkeys: []\n", "version: 1\n"):
        cli.write_manifest(empty)
        refused = cli("apply", "--auto-approve")

        assert_refused(refused, "every managed key", "--force")
        assert ids(dev_server) == before
    assert any("every managed key" in warning for warning in plan_json(cli)["warnings"])

    forced = cli("apply", "--auto-approve", "--force")

    assert forced.code == 0, forced
    assert live_keys(dev_server) == {}
    assert sink_secrets(cli) == {}


def test_deleting_a_key_in_use_needs_force(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    use(dev_server, sink_secrets(cli)["alpha"])
    before = ids(dev_server)
    cli.write_manifest("version: 1\nkeys: [beta]\n")

    refused = cli("apply", "--auto-approve")

    assert_refused(refused, "alpha", "--force")
    assert ids(dev_server) == before

    forced = cli("apply", "--auto-approve", "--force")

    assert forced.code == 0, forced
    assert ids(dev_server) == {"beta": before["beta"]}


def test_replacing_a_key_in_use_needs_force_unless_requested(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    secrets = sink_secrets(cli)
    use(dev_server, secrets["alpha"])
    use(dev_server, secrets["beta"])
    before = ids(dev_server)
    document = json.loads((cli.cwd / SINK).read_text())
    del document["keys"]["alpha"]
    (cli.cwd / SINK).write_text(json.dumps(document))

    # alpha's secret is missing, but a replica uses alpha: replacing it would cut the replica off.
    refused = cli("apply", "--auto-approve", "--target", "alpha")
    assert_refused(refused, "alpha", "--force")
    assert ids(dev_server) == before

    # An explicit --replace is the user's own decision: no --force needed.
    requested = cli("apply", "--auto-approve", "--replace", "beta", "--target", "beta")
    assert requested.code == 0, requested
    assert ids(dev_server)["beta"] != before["beta"]
    assert ids(dev_server)["alpha"] == before["alpha"]


# Policy


def test_protected_keys_are_never_deleted_or_replaced(cli: Cli, dev_server: DevServer) -> None:
    policy = "policy:\n  protect: ['prod-*']\n"
    cli.write_manifest(f"version: 1\n{policy}keys: [prod-api, dev-api]\n")
    apply(cli)
    before = ids(dev_server)
    cli.write_manifest(f"version: 1\n{policy}keys: [dev-api]\n")
    (cli.cwd / SINK).unlink()

    plan = plan_json(cli)
    assert actions_of(plan) == [("replace", "dev-api", "secret-missing")]
    assert any("prod-api" in warning for warning in plan["warnings"])
    apply(cli)

    after = ids(dev_server)
    assert after["prod-api"] == before["prod-api"]
    assert after["dev-api"] != before["dev-api"]

    cli.write_manifest(f"version: 1\n{policy}keys: [prod-api, dev-api]\n")
    refused = cli("apply", "--auto-approve", "--force", "--replace", "prod-api")
    assert_refused(refused, "prod-api", "protect")
    assert ids(dev_server) == after


def test_ignored_keys_are_left_alone(cli: Cli, dev_server: DevServer) -> None:
    legacy = create_out_of_band(dev_server, "legacy-one")
    cli.write_manifest("version: 1\npolicy:\n  ignore: ['legacy-*']\nkeys: [alpha]\n")

    assert plan_actions(cli) == [("create", "alpha", "missing")]
    apply(cli)

    assert ids(dev_server) == {"legacy-one": legacy["id"], "alpha": ids(dev_server)["alpha"]}
    assert cli("plan", "--detailed-exitcode").code == 0
    status = cli("status", "--format", "json")
    assert status.code == 0, status
    rows = {row["name"]: row for row in json.loads(status.stdout)["keys"]}
    assert rows["legacy-one"]["sink"] == "ignored"

    # Even an empty manifest leaves ignored keys alone, and they do not count as managed.
    cli.write_manifest("version: 1\npolicy:\n  ignore: ['legacy-*']\nkeys: []\n")
    assert cli("apply", "--auto-approve", "--force").code == 0
    assert ids(dev_server) == {"legacy-one": legacy["id"]}


def test_prune_false_keeps_keys_the_manifest_does_not_list(cli: Cli, dev_server: DevServer) -> None:
    stray = create_out_of_band(dev_server, "stray")
    cli.write_manifest("version: 1\npolicy:\n  prune: false\nkeys: [alpha]\n")

    assert plan_actions(cli) == [("create", "alpha", "missing")]
    apply(cli)

    assert ids(dev_server)["stray"] == stray["id"]
    assert cli("plan", "--detailed-exitcode").code == 0


def test_on_missing_secret_keep_leaves_the_key_alone(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    apply(cli)
    before = ids(dev_server)
    (cli.cwd / SINK).unlink()
    cli.write_manifest("version: 1\npolicy:\n  on_missing_secret: keep\nkeys: [alpha]\n")

    plan = plan_json(cli)
    run = cli("apply", "--auto-approve")

    assert plan["actions"] == []
    assert any("alpha" in warning for warning in plan["warnings"])
    assert run.code == 0, run
    assert ids(dev_server) == before


def test_on_missing_secret_fail_makes_plan_and_apply_exit_1(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    apply(cli)
    before = ids(dev_server)
    (cli.cwd / SINK).unlink()
    cli.write_manifest("version: 1\npolicy:\n  on_missing_secret: fail\nkeys: [alpha]\n")

    apply_run = cli("apply", "--auto-approve")
    plan_run = cli("plan", "--detailed-exitcode")

    assert_refused(apply_run, "alpha", "secret-missing")
    assert ids(dev_server) == before
    # A failing plan explains itself where messages go, and does not claim all is well.
    assert_refused(plan_run, "alpha", "secret-missing")
    assert "holds every secret" not in plan_run.stdout


# Targeting and replacing


def test_target_limits_the_plan_and_the_apply(cli: Cli, dev_server: DevServer) -> None:
    create_out_of_band(dev_server, "stray")
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")

    assert plan_actions(cli, "--target", "beta") == [("create", "beta", "missing")]
    apply(cli, "--target", "alpha")

    assert set(live_keys(dev_server)) == {"alpha", "stray"}
    assert plan_actions(cli) == [("delete", "stray", "not-in-manifest"), ("create", "beta", "missing")]


def test_replace_renews_one_key_with_reason_requested(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha, beta]\n")
    apply(cli)
    before = ids(dev_server)
    old = sink_secrets(cli)

    text = cli("plan", "--replace", "alpha")
    assert text.code == 0, text
    assert re.search(r"-/\+ replace alpha\s+\(requested\)", text.stdout), text
    apply(cli, "--replace", "alpha")

    after = ids(dev_server)
    assert after["alpha"] != before["alpha"]
    assert after["beta"] == before["beta"]
    new = sink_secrets(cli)
    assert new["alpha"] != old["alpha"]
    assert new["beta"] == old["beta"]
    use(dev_server, new["alpha"])
    assert gateway_status(dev_server.url, old["alpha"]) == 401
    assert_refused(cli("plan", "--replace", "nosuch"), "nosuch")


def test_rotate_after_plans_a_rotation_due_replace(cli: Cli, dev_server: DevServer) -> None:
    # alpha inherits the policy's 1s; beta's own rotate_after overrides it.
    cli.write_manifest(
        "version: 1\npolicy:\n  rotate_after: 1s\nkeys:\n  - alpha\n  - name: beta\n    rotate_after: 1w\n"
    )
    apply(cli)
    before = ids(dev_server)
    time.sleep(1.2)

    assert plan_actions(cli) == [("replace", "alpha", "rotation-due")]
    apply(cli)

    after = ids(dev_server)
    assert after["alpha"] != before["alpha"]
    assert after["beta"] == before["beta"]
    assert sink_secrets(cli)["alpha"][:11] == live_keys(dev_server)["alpha"]["key_prefix"]


# Secrets never land in git by accident


GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def git_init(path: Path) -> None:
    assert GIT is not None
    subprocess.run([GIT, "init", "-q", str(path)], check=True, capture_output=True)


@needs_git
def test_a_file_sink_git_does_not_ignore_is_refused_unless_forced(cli: Cli, dev_server: DevServer) -> None:
    git_init(cli.cwd)
    cli.write_manifest("version: 1\nkeys: [alpha]\n")

    refused = cli("apply", "--auto-approve")

    assert_refused(refused, "`/secrets/ai-gateway-keys.json*`", ".gitignore")
    assert live_keys(dev_server) == {}
    assert not (cli.cwd / SINK).exists()

    forced = cli("apply", "--auto-approve", "--force")

    assert forced.code == 0, forced
    assert set(live_keys(dev_server)) == {"alpha"}
    assert set(sink_secrets(cli)) == {"alpha"}


@needs_git
def test_a_directory_sink_in_git_passes_once_the_advised_line_is_added(
    cli: Cli, dev_server: DevServer
) -> None:
    git_init(cli.cwd)
    cli.write_manifest("version: 1\nsink:\n  type: directory\n  path: keys.d\nkeys: [alpha]\n")

    refused = cli("apply", "--auto-approve")

    assert_refused(refused, "`/keys.d*`", ".gitignore")
    assert live_keys(dev_server) == {}
    (cli.cwd / ".gitignore").write_text("/keys.d*\n")

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    assert set(live_keys(dev_server)) == {"alpha"}
    assert (cli.cwd / "keys.d" / "alpha").is_file()


def git(cwd: Path, *args: str) -> str:
    assert GIT is not None
    done = subprocess.run([GIT, *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


@needs_git
@pytest.mark.parametrize("ignored", [True, False])
def test_a_sink_file_git_already_tracks_is_refused_ignored_or_not(
    cli: Cli, dev_server: DevServer, ignored: bool
) -> None:
    git_init(cli.cwd)
    cli.write_manifest("version: 1\nsink:\n  path: out/keys.json\nkeys: [alpha]\n")
    (cli.cwd / "out").mkdir()
    empty = json.dumps({"version": 1, "coderd_url": dev_server.url, "keys": {}}) + "\n"
    (cli.cwd / "out" / "keys.json").write_text(empty)  # committed long ago
    git(cli.cwd, "add", "out/keys.json")
    if ignored:
        (cli.cwd / ".gitignore").write_text("out/\n")

    plan = cli("plan")
    refused = cli("apply", "--auto-approve")

    assert plan.code == 0 and "needs --force" in plan.stdout and "already tracks out/keys.json" in plan.stdout
    assert_refused(refused, "already tracks out/keys.json", "git rm -r --cached out/keys.json")
    assert live_keys(dev_server) == {}
    assert (cli.cwd / "out" / "keys.json").read_text() == empty
    git(cli.cwd, "rm", "-q", "--cached", "out/keys.json")
    (cli.cwd / ".gitignore").write_text("/out/keys.json*\n")
    assert cli("apply", "--auto-approve").code == 0
    assert git(cli.cwd, "status", "--porcelain", "--", "out") == ""


@needs_git
def test_a_directory_sink_holding_a_tracked_file_is_refused(cli: Cli, dev_server: DevServer) -> None:
    git_init(cli.cwd)
    (cli.cwd / ".gitignore").write_text("/keys.d*\n")
    cli.write_manifest("version: 1\nsink:\n  type: directory\n  path: keys.d\nkeys: [alpha]\n")
    (cli.cwd / "keys.d").mkdir()
    (cli.cwd / "keys.d" / "alpha").write_text("old secret")
    git(cli.cwd, "add", "--force", "keys.d/alpha")

    refused = cli("apply", "--auto-approve")

    assert_refused(refused, "already tracks keys.d/alpha", "git rm -r --cached keys.d")
    assert live_keys(dev_server) == {}


def test_a_sink_file_made_for_another_coderd_is_refused(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\nkeys: [alpha]\n")
    apply(cli)
    original = (cli.cwd / SINK).read_bytes()

    with DevServer(DevServerConfig(port=0, token=OWNER_TOKEN)) as other:
        plan = cli("plan", "--url", other.url)
        run = cli("apply", "--auto-approve", "--url", other.url)
        other_keys = live_keys(other)

    assert_refused(plan, dev_server.url)
    assert_refused(run, dev_server.url)
    assert other_keys == {}
    assert (cli.cwd / SINK).read_bytes() == original
