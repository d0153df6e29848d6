"""Several Coder deployments in one repository: a manifest each, each naming the variable of its
own token (coderd.token_env), planned and inspected together with -f given several times."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from keysync.devserver import DevServer, DevServerConfig

from conftest import Cli, base_env

PROD_TOKEN = "keysyncProd-0123456789abcdefABCDEF"
STAGING_TOKEN = "keysyncStg-0123456789abcdefABCDEF"
PROD, STAGING = "deploy/prod/keysync.yaml", "deploy/staging/keysync.yaml"
BOTH = ["-f", PROD, "-f", STAGING]


@pytest.fixture
def servers() -> Iterator[tuple[DevServer, DevServer]]:
    with (
        DevServer(DevServerConfig(port=0, token=PROD_TOKEN, seed=1)) as prod,
        DevServer(DevServerConfig(port=0, token=STAGING_TOKEN, seed=2)) as staging,
    ):
        yield prod, staging


def _manifest(cwd: Path, path: str, server: DevServer, token_env: str, keys: list[str]) -> None:
    document = {"version": 1, "coderd": {"url": server.url, "token_env": token_env}, "keys": keys}
    (cwd / path).parent.mkdir(parents=True, exist_ok=True)
    (cwd / path).write_text(yaml.safe_dump(document))


@pytest.fixture
def repo(tmp_path: Path, servers: tuple[DevServer, DevServer]) -> Cli:
    """Two deployments, each with its own token variable; no CODER_URL, no CODER_SESSION_TOKEN."""
    prod, staging = servers
    _manifest(tmp_path, PROD, prod, "CODER_PROD_SESSION_TOKEN", ["gateway-a"])
    _manifest(tmp_path, STAGING, staging, "CODER_STAGING_SESSION_TOKEN", ["gateway-b", "gateway-c"])
    env = {**base_env(), "CODER_PROD_SESSION_TOKEN": PROD_TOKEN, "CODER_STAGING_SESSION_TOKEN": STAGING_TOKEN}
    return Cli(tmp_path, env)


def _no_token_in(*texts: str) -> None:
    for text in texts:
        assert PROD_TOKEN not in text and STAGING_TOKEN not in text


def test_plan_reports_each_manifest_in_its_own_section_with_its_own_token(repo: Cli) -> None:
    run = repo("plan", *BOTH, "--detailed-exitcode")
    assert run.code == 2, run
    prod, staging = run.stdout.split(f"=== {STAGING} ===")
    assert prod.startswith(f"=== {PROD} ===\n")
    assert "+ create gateway-a" in prod and "gateway-b" not in prod
    assert "+ create gateway-b" in staging and "+ create gateway-c" in staging and "gateway-a" not in staging
    _no_token_in(run.stdout, run.stderr)


def test_json_is_a_list_of_one_plan_per_manifest_and_one_manifest_stays_an_object(repo: Cli) -> None:
    run = repo("plan", *BOTH, "--format", "json")
    assert run.code == 0, run
    documents = json.loads(run.stdout)
    assert [d["manifest"] for d in documents] == [PROD, STAGING]
    assert [[a["name"] for a in d["actions"]] for d in documents] == [
        ["gateway-a"],
        ["gateway-b", "gateway-c"],
    ]
    one = json.loads(repo("plan", "-f", PROD, "--format", "json").stdout)
    assert isinstance(one, dict) and "manifest" not in one
    assert one["actions"] == documents[0]["actions"]


def test_the_markdown_has_a_heading_per_manifest(repo: Cli) -> None:
    run = repo("plan", *BOTH, "--format", "markdown")
    assert run.code == 0, run
    assert run.stdout.index(f"## `{PROD}`") < run.stdout.index(f"## `{STAGING}`")


def test_exit_2_when_any_has_changes_and_0_when_none_has(repo: Cli) -> None:
    assert repo("apply", "-f", PROD, "--auto-approve").code == 0
    assert repo("plan", *BOTH, "--detailed-exitcode").code == 2  # staging still pending
    assert repo("apply", "-f", STAGING, "--auto-approve").code == 0
    run = repo("plan", *BOTH, "--detailed-exitcode")
    assert run.code == 0, run
    assert run.stdout.count("No changes") == 2


def test_one_failing_manifest_fails_the_plan_and_the_others_are_still_reported(repo: Cli) -> None:
    del repo.env["CODER_STAGING_SESSION_TOKEN"]
    run = repo("plan", *BOTH, "--detailed-exitcode")
    assert run.code == 1
    assert "+ create gateway-a" in run.stdout
    assert f"keysync: error: {STAGING}: no session token: set CODER_STAGING_SESSION_TOKEN" in run.stderr
    assert "Traceback" not in run.stderr
    documents = json.loads(repo("plan", *BOTH, "--format", "json").stdout)
    assert "actions" in documents[0] and "CODER_STAGING_SESSION_TOKEN" in documents[1]["error"]


def test_allowed_hosts_pin_each_deployment(repo: Cli, servers: tuple[DevServer, DevServer]) -> None:
    prod_port = servers[0].url.rsplit(":", 1)[1]
    repo.env["KEYSYNC_ALLOWED_HOSTS"] = f"127.0.0.1:{prod_port}"
    run = repo("plan", *BOTH)
    assert run.code == 1
    assert "+ create gateway-a" in run.stdout
    assert f"keysync: error: {STAGING}:" in run.stderr and "KEYSYNC_ALLOWED_HOSTS" in run.stderr
    _no_token_in(run.stdout, run.stderr)


def test_status_and_validate_take_several_manifests(repo: Cli) -> None:
    assert repo("apply", "-f", PROD, "--auto-approve").code == 0
    status = repo("status", *BOTH, "--format", "json")
    assert status.code == 0, status
    documents = json.loads(status.stdout)
    assert [d["manifest"] for d in documents] == [PROD, STAGING]
    assert [[row["name"] for row in d["keys"]] for d in documents] == [["gateway-a"], []]
    text = repo("status", *BOTH)
    assert text.code == 0 and f"=== {STAGING} ===" in text.stdout
    valid = repo("validate", *BOTH)
    assert valid.code == 0, valid
    assert valid.stdout.splitlines() == [
        f"{PROD}: valid (1 key, sink file)",
        f"{STAGING}: valid (2 keys, sink file)",
    ]


def test_apply_and_out_take_exactly_one_manifest(repo: Cli) -> None:
    apply = repo("apply", *BOTH, "--auto-approve")
    assert apply.code == 1
    assert (
        apply.stderr == "keysync: error: apply takes exactly one manifest, not 2 (-f given several times)\n"
    )
    out = repo("plan", *BOTH, "--out", "plan.json")
    assert out.code == 1 and "--out takes exactly one manifest" in out.stderr
    assert not (repo.cwd / "plan.json").exists()
    targeted = repo("plan", *BOTH, "--target", "gateway-a")
    assert targeted.code == 1 and "--target and --replace take exactly one manifest" in targeted.stderr


def test_token_file_beats_token_env(repo: Cli) -> None:
    repo.env["CODER_PROD_SESSION_TOKEN"] = "keysyncWrong-0123456789abcdefABCDEF"
    token_file = repo.cwd / "prod-token"
    token_file.write_text(PROD_TOKEN + "\n")
    run = repo("plan", "-f", PROD, "--token-file", str(token_file))
    assert run.code == 0, run
    assert "+ create gateway-a" in run.stdout
    refused = repo("plan", "-f", PROD)
    assert refused.code == 1 and "Traceback" not in refused.stderr


def test_token_env_must_name_a_coder_token_variable(repo: Cli) -> None:
    (repo.cwd / "keysync.yaml").write_text("version: 1\ncoderd:\n  token_env: VAULT_TOKEN\nkeys: []\n")
    run = repo("validate")
    assert run.code == 1
    assert "keysync.yaml:3: coderd.token_env" in run.stderr and "VAULT_TOKEN" in run.stderr


def test_validate_json_is_a_list_of_one_object_per_manifest_and_one_manifest_stays_an_object(
    repo: Cli,
) -> None:
    valid = repo("validate", *BOTH, "--format", "json")
    assert valid.code == 0, valid
    assert json.loads(valid.stdout) == [
        {"manifest": PROD, "format_version": 1, "valid": True, "keys": 1, "sink": "file"},
        {"manifest": STAGING, "format_version": 1, "valid": True, "keys": 2, "sink": "file"},
    ]
    one = json.loads(repo("validate", "-f", PROD, "--format", "json").stdout)
    assert one == {
        "format_version": 1,
        "valid": True,
        "manifests": [{"path": PROD, "valid": True, "keys": 1, "sink": "file"}],
    }
    (repo.cwd / STAGING).write_text("version: 1\nkeys: [Bad_Name]\n")
    invalid = repo("validate", *BOTH, "--format", "json")
    assert invalid.code == 1
    prod, staging = json.loads(invalid.stdout)
    assert prod["valid"] is True and staging["manifest"] == STAGING and staging["valid"] is False
    assert any("Bad_Name" in problem for problem in staging["problems"])
    assert "Bad_Name" in invalid.stderr and "Traceback" not in invalid.stderr


def test_each_listed_plan_says_whether_it_is_applyable_and_a_failed_one_is_versioned_too(repo: Cli) -> None:
    del repo.env["CODER_STAGING_SESSION_TOKEN"]
    prod, staging = json.loads(repo("plan", *BOTH, "--format", "json").stdout)
    assert prod["format_version"] == 1 and prod["applyable"] is True
    assert set(staging) == {"manifest", "format_version", "error"}


def test_an_invalid_manifest_among_several_is_named_once_in_its_error_line(repo: Cli) -> None:
    (repo.cwd / STAGING).write_text("version: 1\nkeys:\n  - name: Not_A_Name\n")
    run = repo("plan", *BOTH)
    assert run.code == 1, run
    (line,) = [line for line in run.stderr.splitlines() if "keys[0].name" in line]
    assert line.startswith(f"keysync: error: {STAGING}:3: keys[0].name: "), line
    assert line.count(STAGING) == 1
