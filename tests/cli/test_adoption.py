"""End to end, day one on a deployment that already has keys: export adopts without rotating,
import hands keysync the secrets a team holds, manage lets teams share one Coder, look-alike
generations are plain keys, and the plan says which Coder it targets."""

from __future__ import annotations

import json
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from terminal import run_on_a_terminal

from keysync.adoption import export_document, export_yaml, imported_record, is_key_shaped
from keysync.devserver import DevServer, DevServerConfig
from keysync.errors import UsageError
from keysync.keys import LiveKey
from keysync.manifest.model import Manifest
from keysync.secret import Secret

from coderlive import create_out_of_band, live_keys
from conftest import KEYSYNC, Cli, base_env

SINK = Path("secrets/ai-gateway-keys.json")


def sink_secrets(cli: Cli) -> dict[str, str]:
    path = cli.cwd / SINK
    if not path.exists():
        return {}
    return {name: record["key"] for name, record in json.loads(path.read_text())["keys"].items()}


def plan_json(cli: Cli, *args: str) -> dict[str, Any]:
    run = cli("plan", "--format", "json", *args)
    assert run.code == 0, run
    document: dict[str, Any] = json.loads(run.stdout)
    return document


def said(cli: Cli) -> str:
    return "".join(run.stdout + run.stderr for run in cli.runs)


# --- the pure part: what export writes, what import accepts ------------------------------------------

NOW = datetime(2026, 1, 2, tzinfo=UTC)
URL = "https://coder.example.com"
SECRET = "AbCdEfGhIjK" + "0123456789abcdefghijklmnopqrstuv"


def key(name: str, prefix: str = "AbCdEfGhIjK") -> LiveKey:
    return LiveKey(id=f"id-{name}", name=name, key_prefix=prefix, created_at=NOW)


def test_export_lists_look_alike_generations_under_ignore_and_keeps_an_existing_manage() -> None:
    existing = Manifest.model_validate({"version": 1, "policy": {"manage": ["edge*", "lonely-*"]}})
    live = [key("edge"), key("edge-r7"), key("gw"), key("lonely-r2")]

    document = export_document(live, {"url": URL}, existing)
    text = export_yaml(document)

    assert document["keys"] == ["edge", "lonely-r2"]
    assert document["policy"] == {
        "manage": ["edge*", "lonely-*"],
        "ignore": ["edge-r7"],
        "on_missing_secret": "keep",
    }
    assert yaml.safe_load(text) == document
    assert text.index("# The sink does not hold") < text.index("on_missing_secret: keep")
    assert text.index("# Named like a rotation generation") < text.index("ignore:")
    assert not load_problems(text)


def load_problems(text: str) -> list[str]:
    from keysync.errors import ManifestError
    from keysync.manifest.load import load_manifest

    path = Path(tempfile.mkdtemp()) / "keysync.yaml"
    path.write_text(text)
    try:
        load_manifest(path)
    except ManifestError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(
    ("text", "shaped"),
    [
        (SECRET, True),
        ("cgw_" + SECRET[:39], True),
        (SECRET[:42], False),
        (SECRET[:42] + "-", False),
        ("", False),
    ],
)
def test_a_key_has_coders_shape(text: str, shaped: bool) -> None:
    assert is_key_shaped(text) is shaped


def test_an_imported_record_is_the_live_keys_under_its_manifest_name() -> None:
    manifest = Manifest.model_validate({"version": 1, "keys": ["gw"]})

    record = imported_record("gw", Secret(SECRET), [key("gw")], manifest, URL)

    assert (record.name, record.id, record.key_prefix, record.coderd_url) == ("gw", "id-gw", SECRET[:11], URL)
    assert record.key.reveal() == SECRET


@pytest.mark.parametrize(
    ("name", "live_prefix", "refusal"),
    [
        ("gw", "ZZZZZZZZZZZ", "is not the live key 'gw''s"),
        ("other", "AbCdEfGhIjK", "does not manage"),
        ("edge", "AbCdEfGhIjK", "Coder has no key named 'edge'"),
    ],
)
def test_import_refusals_never_show_the_secret(name: str, live_prefix: str, refusal: str) -> None:
    manifest = Manifest.model_validate({"version": 1, "keys": ["gw", "edge"]})
    with pytest.raises(UsageError) as raised:
        imported_record(name, Secret(SECRET), [key("gw", live_prefix)], manifest, URL)
    assert refusal in str(raised.value)
    assert SECRET[:11] not in str(raised.value).replace(live_prefix, "")


# --- export ------------------------------------------------------------------------------------------


def test_an_exported_manifest_plans_no_change_and_says_why_it_keeps(cli: Cli, dev_server: DevServer) -> None:
    for name in ("gw-east", "gw-west", "edge", "edge-r7"):
        create_out_of_band(dev_server, name)

    export = cli("export", "-f", "keysync.yaml")
    (cli.cwd / "keysync.yaml").write_text(export.stdout)  # as `keysync export > keysync.yaml` would
    plan = cli("plan")
    document = plan_json(cli)

    assert export.code == 0, export
    exported = yaml.safe_load(export.stdout)
    assert exported["keys"] == ["edge", "gw-east", "gw-west"]
    assert exported["policy"]["on_missing_secret"] == "keep"
    assert exported["policy"]["ignore"] == ["edge-r7"], "a look-alike generation is left alone"
    assert "# The sink does not hold these keys' secrets yet" in export.stdout
    assert "keysync import NAME" in export.stdout
    assert plan.code == 0, plan
    assert "No changes." in plan.stdout and "replace" not in plan.stdout
    assert document["actions"] == []
    assert set(live_keys(dev_server)) == {"gw-east", "gw-west", "edge", "edge-r7"}


def test_export_through_a_shell_redirect_onto_the_manifest_it_reads(cli: Cli, dev_server: DevServer) -> None:
    create_out_of_band(dev_server, "alpha")
    (cli.cwd / "keysync.yaml").write_text("")  # what `> keysync.yaml` leaves before export runs

    export = cli("export")

    assert export.code == 0, export
    assert yaml.safe_load(export.stdout)["keys"] == ["alpha"]


# --- import ------------------------------------------------------------------------------------------


def adopted(cli: Cli, dev_server: DevServer, *names: str) -> dict[str, str]:
    """Keys made by hand before keysync, their secrets, and the exported manifest in place."""
    secrets = {name: str(create_out_of_band(dev_server, name)["key"]) for name in names}
    cli.write_manifest(cli("export").stdout)
    return secrets


def test_import_puts_a_held_secret_into_the_sink_without_echoing_it(cli: Cli, dev_server: DevServer) -> None:
    secrets = adopted(cli, dev_server, "alpha", "beta")

    run = cli("import", "alpha", input=secrets["alpha"] + "\n")

    assert run.code == 0, run
    assert "Imported the secret of alpha" in run.stdout
    assert sink_secrets(cli) == {"alpha": secrets["alpha"]}
    warnings = plan_json(cli)["warnings"]
    assert isinstance(warnings, list)
    assert not any("'alpha'" in w for w in warnings) and any("'beta'" in w for w in warnings)
    cli.write_manifest(cli.cwd.joinpath("keysync.yaml").read_text().replace("keep", "replace"))
    assert [a["name"] for a in plan_json(cli)["actions"]] == ["beta"], "only what nobody holds rotates"
    assert all(secret[:12] not in said(cli) for secret in secrets.values())


def test_import_refuses_a_secret_of_another_key_and_writes_nothing(cli: Cli, dev_server: DevServer) -> None:
    secrets = adopted(cli, dev_server, "alpha", "beta")

    wrong = cli("import", "alpha", input=secrets["beta"])
    junk = cli("import", "alpha", input="not a key at all")
    empty = cli("import", "alpha", input="")
    unknown = cli("import", "gamma", input=secrets["alpha"])

    for run, message in (
        (wrong, "is not the live key 'alpha''s"),
        (junk, "no gateway key"),
        (empty, "stdin is empty"),
        (unknown, "does not manage a key 'gamma'"),
    ):
        assert run.code == 1, run
        assert message in run.stderr and "Traceback" not in run.stderr
    assert not (cli.cwd / SINK).exists()
    assert all(secret[:12] not in said(cli) for secret in secrets.values())


def test_import_refuses_a_terminal_as_stdin(cli: Cli, dev_server: DevServer) -> None:
    adopted(cli, dev_server, "alpha")

    run = run_on_a_terminal(cli, "", "import", "alpha")

    assert run.code == 1, run
    assert "not from a terminal" in run.stderr and "keysync import alpha <" in run.stderr
    assert not (cli.cwd / SINK).exists()


def test_import_takes_no_secret_as_an_argument(cli: Cli, dev_server: DevServer) -> None:
    secrets = adopted(cli, dev_server, "alpha")

    run = cli("import", "alpha", secrets["alpha"], input=secrets["alpha"])

    assert run.code == 1 and "stdin only, never as an argument" in run.stderr, run
    assert secrets["alpha"] not in run.stderr + run.stdout
    assert not (cli.cwd / SINK).exists()


# --- manage ------------------------------------------------------------------------------------------


def test_two_manifests_share_one_coder_without_pruning_each_other(cli: Cli, dev_server: DevServer) -> None:
    for team in ("a", "b"):
        cli.write_manifest(
            f"version: 1\nsink:\n  path: {team}.json\npolicy:\n  manage: ['team-{team}-*']\n"
            f"keys: [team-{team}-gw, team-{team}-edge]\n",
            name=f"{team}.yaml",
        )
    for team in ("a", "b"):
        run = cli("apply", "--auto-approve", "-f", f"{team}.yaml")
        assert run.code == 0 and " 0 deleted" in run.stdout, run

    assert set(live_keys(dev_server)) == {"team-a-gw", "team-a-edge", "team-b-gw", "team-b-edge"}
    assert plan_json(cli, "-f", "a.yaml")["actions"] == [], "team b's keys are not team a's to prune"
    status = json.loads(cli("status", "-f", "a.yaml", "--format", "json").stdout)
    assert {row["name"]: row["sink"] for row in status["keys"]}["team-b-gw"] == "ignored"


def test_a_manifest_key_outside_manage_is_a_validation_error(cli: Cli) -> None:
    cli.write_manifest("version: 1\npolicy:\n  manage: ['team-a-*']\nkeys:\n  - team-a-gw\n  - team-b-gw\n")

    run = cli("validate")

    assert run.code == 1, run
    assert "keysync.yaml:6: keys[1]" in run.stderr and "policy.manage" in run.stderr


# --- generations ---------------------------------------------------------------------------------------


def test_hand_made_look_alike_generations_are_plain_deletes_naming_the_key(
    cli: Cli, dev_server: DevServer
) -> None:
    cli.write_manifest("version: 1\npolicy:\n  rotation: replace\nkeys: [edge]\n")
    assert cli("apply", "--auto-approve").code == 0
    r2, r7 = create_out_of_band(dev_server, "edge-r2"), create_out_of_band(dev_server, "edge-r7")

    text = cli("plan")
    markdown = cli("plan", "--format", "markdown")
    document = plan_json(cli)

    assert text.code == 0, text
    assert "- delete edge-r2  (not-in-manifest)  destroys live key edge-r2" in text.stdout
    assert "- delete edge-r7  (not-in-manifest)  destroys live key edge-r7" in text.stdout
    assert "replace" not in text.stdout.replace("0 to replace", "")
    assert "| `edge-r7` |" in markdown.stdout
    assert {(a["action"], a["live_name"], a["key_prefix"]) for a in document["actions"]} == {
        ("delete", "edge-r2", r2["key_prefix"]),
        ("delete", "edge-r7", r7["key_prefix"]),
    }
    assert document["waiting"] == []
    rows = {row["name"]: row for row in json.loads(cli("status", "--format", "json").stdout)["keys"]}
    assert (rows["edge-r7"]["logical_name"], rows["edge-r7"]["in_manifest"]) == ("edge-r7", False)


# --- which Coder the plan targets --------------------------------------------------------------------


def test_the_plan_names_its_target_and_where_the_url_came_from(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest(f"version: 1\ncoderd:\n  url: {dev_server.url}\nkeys: [alpha]\n")

    from_env = cli("plan")
    from_flag = cli("plan", "--url", dev_server.url)
    del cli.env["CODER_URL"]
    from_manifest = cli("plan")
    markdown = cli("plan", "--format", "markdown")

    assert from_env.stdout.splitlines()[0] == f"Target: {dev_server.url} (from CODER_URL)"
    assert from_flag.stdout.splitlines()[0] == f"Target: {dev_server.url} (from --url)"
    assert (
        from_manifest.stdout.splitlines()[0] == f"Target: {dev_server.url} (from the manifest's coderd.url)"
    )
    assert (
        markdown.stdout.splitlines()[0]
        == f"### keysync plan for {dev_server.url} (from the manifest's coderd.url)"
    )
    assert "overrides" not in said(cli)


def test_plan_warns_when_coder_url_overrides_the_manifest(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\ncoderd:\n  url: https://coder-prod.example.com\nkeys: [alpha]\n")

    run = cli("plan")
    document = plan_json(cli)

    assert run.code == 0, run
    assert run.stdout.splitlines()[0] == f"Target: {dev_server.url} (from CODER_URL)"
    warning = (
        f"CODER_URL ({dev_server.url}) overrides the manifest's coderd.url (https://coder-prod.example.com)"
    )
    assert f"Warning: {warning}" in run.stdout
    assert any(warning in w for w in document["warnings"])


# --- the README walkthrough ----------------------------------------------------------------------


def readme_blocks(heading: str) -> list[str]:
    """The sh blocks of one README section, in order."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n```", 1)[0] for block in section.split("```sh\n")[1:]]


def test_the_readme_adoption_walkthrough_runs_start_to_finish(tmp_path: Path) -> None:
    setup, adopt = readme_blocks("## Adopting a deployment, and sharing one")
    # The test runs its own dev server where the README starts one: only the port differs.
    made_by_hand = "\n".join(
        line for line in setup.splitlines() if not line.startswith(("keysync dev-server", "export CODER_URL"))
    )
    token = "keysyncDev-0123456789abcdefghijkl"
    config = DevServerConfig(port=0, token=token, seed=7, api="ai-gateway-keys")
    with DevServer(config) as server:
        env = {**base_env(), "CODER_URL": server.url, "CODER_SESSION_TOKEN": token}
        env["PATH"] = f"{Path(KEYSYNC).parent}:{env.get('PATH', '')}"
        before = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", made_by_hand], cwd=tmp_path, env=env, capture_output=True
        )
        held = (tmp_path / "gateway-us-east.key").read_text().strip()
        ids = {name: key["id"] for name, key in live_keys(server).items()}
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", adopt], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        after = live_keys(server)

    assert before.returncode == 0, before
    assert done.returncode == 0, done
    assert after["gateway-us-east"]["id"] == ids["gateway-us-east"], "the held key is adopted, not rotated"
    assert after["gateway-eu-west"]["id"] != ids["gateway-eu-west"], "the key nobody held is replaced"
    records = json.loads((tmp_path / SINK).read_text())["keys"]
    assert records["gateway-us-east"]["key"] == held
    assert records["gateway-eu-west"]["key"][:11] == after["gateway-eu-west"]["key_prefix"]
    assert held[:12] not in done.stdout + done.stderr


def test_apply_asks_with_the_target_named_and_the_override_warned(cli: Cli, dev_server: DevServer) -> None:
    cli.write_manifest("version: 1\ncoderd:\n  url: https://coder-prod.example.com\nkeys: [alpha]\n")

    declined = run_on_a_terminal(cli, "no\n", "apply")

    assert declined.code == 1, declined
    assert f"Target: {dev_server.url} (from CODER_URL)" in declined.stderr
    assert "overrides the manifest's coderd.url (https://coder-prod.example.com)" in declined.stderr
    assert live_keys(dev_server) == {}
