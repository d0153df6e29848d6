"""The GitHub Action: action.yml keeps the contract, and its script, run as the composite step runs
it (INPUT_* and the variables GitHub sets), keeps one comment per manifest on a fake GitHub API
on loopback while the real keysync plans and applies against the dev server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from keysync import __version__
from keysync.devserver import DevServer, DevServerConfig

from coderlive import create_out_of_band
from conftest import KEYSYNC, base_env
from quietserver import QuietServer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "action" / "run.py"
GITHUB_TOKEN = "ghs_FakeActionToken0123456789abcdefABCD"
REPO = "example/infra"
PR = 42
MARKER = "<!-- keysync-plan manifest="


@dataclass
class FakeGitHub:
    """The issue-comment endpoints of the REST API, paginated like GitHub's, for one repository."""

    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, number: int, body: str, login: str = "someone") -> dict[str, Any]:
        with self.lock:
            self.next_id += 1
            comment = {"id": self.next_id, "body": body, "user": {"login": login}}
            self.comments.setdefault(number, []).append(comment)
            return comment

    def ours(self, number: int = PR) -> list[dict[str, Any]]:
        return [c for c in self.comments.get(number, []) if c["body"].startswith(MARKER)]

    def writes(self) -> list[str]:
        return [method for method, _ in self.requests if method != "GET"]


class _Handler(BaseHTTPRequestHandler):
    github: FakeGitHub
    base: str

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any, link: str = "") -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if link:
            self.send_header("Link", link)
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        self.github.requests.append((self.command, self.path))
        if self.headers.get("Authorization") == f"Bearer {GITHUB_TOKEN}":
            return True
        self._answer(401, {"message": "Bad credentials"})
        return False

    def _body(self) -> str:
        return str(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["body"])

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        match = re.fullmatch(rf"/repos/{REPO}/issues/(\d+)/comments", url.path)
        if not self._authorized():
            return
        if not match:
            self._answer(404, {"message": "Not Found"})
            return
        query = parse_qs(url.query)
        size, page = int(query.get("per_page", ["30"])[0]), int(query.get("page", ["1"])[0])
        listed = self.github.comments.get(int(match[1]), [])
        link = ""
        if page * size < len(listed):
            link = f'<{self.base}{url.path}?per_page={size}&page={page + 1}>; rel="next"'
        self._answer(200, listed[(page - 1) * size : page * size], link)

    def do_POST(self) -> None:
        match = re.fullmatch(rf"/repos/{REPO}/issues/(\d+)/comments", self.path)
        if self._authorized() and match:
            self._answer(201, self.github.add(int(match[1]), self._body(), "github-actions[bot]"))

    def do_PATCH(self) -> None:
        match = re.fullmatch(rf"/repos/{REPO}/issues/comments/(\d+)", self.path)
        if not self._authorized() or not match:
            return
        every = [c for listed in self.github.comments.values() for c in listed]
        comment = next(c for c in every if c["id"] == int(match[1]))
        comment["body"] = self._body()
        self._answer(200, comment)


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHub, str]]:
    fake = FakeGitHub()
    server = QuietServer(("127.0.0.1", 0), _Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _Handler.github, _Handler.base = fake, base
    server.serve_in_background()
    try:
        yield fake, base
    finally:
        server.stop()


@dataclass
class Step:
    """One run of the action's script, with what it left in GITHUB_OUTPUT and the job summary."""

    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str


@dataclass
class Action:
    cwd: Path
    env: dict[str, str]
    runs: int = 0

    def __call__(self, command: str = "plan", **inputs: str) -> Step:
        self.runs += 1
        out, summary = self.cwd / f"output-{self.runs}", self.cwd / f"summary-{self.runs}"
        env = {**self.env, "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)}
        env["INPUT_COMMAND"] = command
        env.update({f"INPUT_{name.upper()}": value for name, value in inputs.items()})
        done = subprocess.run(
            [sys.executable, str(SCRIPT)], cwd=self.cwd, env=env, capture_output=True, text=True, timeout=60
        )
        lines = out.read_text().splitlines() if out.exists() else []
        outputs = dict(line.split("=", 1) for line in lines)
        text = summary.read_text() if summary.exists() else ""
        step = Step(done.returncode, done.stdout, done.stderr, outputs, text)
        assert GITHUB_TOKEN not in done.stdout + done.stderr + text
        return step

    def manifest(self, keys: list[str], name: str = "keysync.yaml", **coderd: str) -> None:
        path = self.cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = {"path": f"secrets/{name.replace('/', '-')}.json"}
        document = {"version": 1, "coderd": coderd, "keys": keys, "policy": {"prune": False}, "sink": sink}
        path.write_text(yaml.safe_dump(document))


@pytest.fixture
def action(tmp_path: Path, dev_server: DevServer, github: tuple[FakeGitHub, str]) -> Action:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"number": PR, "pull_request": {"number": PR, "head": {"sha": "f" * 40}}}))
    env = {
        **base_env(),
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": github[1],
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_RUN_ID": "77",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event),
        "KEYSYNC": KEYSYNC,
        "INPUT_GITHUB_TOKEN": GITHUB_TOKEN,
        "INPUT_COMMENT": "auto",
        "CODER_URL": dev_server.url,
        "CODER_SESSION_TOKEN": dev_server.token,
    }
    (tmp_path / "secrets").mkdir()
    return Action(tmp_path, env)


def test_the_first_plan_posts_one_comment_and_the_next_updates_it(
    action: Action, github: tuple[FakeGitHub, str]
) -> None:
    fake = github[0]
    for n in range(130):  # our comment lands on the second page of the listing
        fake.add(PR, f"review remark {n}")
    action.manifest(["gateway-a"])
    first = action("plan")
    assert first.code == 0, first.stderr
    assert first.outputs == {"changes": "true", "exitcode": "2", "plan-file": "keysync-plan.json"}
    (comment,) = fake.ours()
    assert comment["body"].startswith(f"{MARKER}keysync.yaml -->\n")
    assert "`gateway-a`" in comment["body"] and "1 to create" in comment["body"]
    assert "1 to create" in first.summary and (action.cwd / "keysync-plan.json").is_file()

    action.manifest(["gateway-a", "gateway-b"])
    second = action("plan")
    assert second.code == 0, second.stderr
    assert fake.ours() == [comment] and "2 to create" in comment["body"]
    assert fake.writes() == ["POST", "PATCH"]


def test_a_plan_with_nothing_pending_turns_the_comment_into_nothing_pending(
    action: Action, github: tuple[FakeGitHub, str]
) -> None:
    action.manifest(["gateway-a"])
    assert action("plan").code == 0
    applied = action("apply")
    assert applied.code == 0, applied.stderr
    assert applied.outputs == {"changes": "true", "exitcode": "0", "plan-file": "keysync-plan.json"}
    assert "created gateway-a" in applied.summary
    quiet = action("plan")
    assert quiet.outputs["changes"] == "false" and quiet.outputs["exitcode"] == "0"
    (comment,) = github[0].ours()
    assert "Nothing pending" in comment["body"] and "create" not in comment["body"]
    assert github[0].writes() == ["POST", "PATCH"]


def test_nothing_pending_and_no_earlier_comment_posts_nothing(
    action: Action, github: tuple[FakeGitHub, str]
) -> None:
    action.manifest([])
    step = action("plan")
    assert step.code == 0, step.stderr
    assert step.outputs["changes"] == "false"
    assert github[0].writes() == [] and github[0].ours() == []


PROD, STAGING = "deploy/prod/keysync.yaml", "deploy/staging/keysync.yaml"
BOTH = f"{PROD}\n{STAGING}\n"
STAGING_TOKEN = "keysyncStg-0123456789abcdefABCDEF"


@pytest.fixture
def two_deployments(action: Action, dev_server: DevServer) -> Iterator[str]:
    """Prod on the usual dev server, staging on a second one, each manifest naming its token's
    variable; yields the allowed-hosts input that pins both."""
    with DevServer(DevServerConfig(port=0, token=STAGING_TOKEN, seed=3)) as staging:
        action.manifest(["alpha"], PROD, url=dev_server.url, token_env="CODER_PROD_SESSION_TOKEN")
        action.manifest(["beta"], STAGING, url=staging.url, token_env="CODER_STAGING_SESSION_TOKEN")
        action.env["CODER_PROD_SESSION_TOKEN"] = action.env.pop("CODER_SESSION_TOKEN")
        action.env["CODER_STAGING_SESSION_TOKEN"] = STAGING_TOKEN
        del action.env["CODER_URL"]
        yield "\n".join(url.removeprefix("http://") for url in (dev_server.url, staging.url))


def test_two_manifests_keep_two_comments(
    action: Action, github: tuple[FakeGitHub, str], two_deployments: str
) -> None:
    for _ in range(2):
        step = action("plan", manifest=BOTH, allowed_hosts=two_deployments)
        assert step.code == 0, step.stderr
    assert step.outputs == {"changes": "true", "exitcode": "2", "plan-file": "keysync-plans"}
    prod, staging = github[0].ours()
    assert prod["body"].startswith(f"{MARKER}{PROD} -->") and "`alpha`" in prod["body"]
    assert staging["body"].startswith(f"{MARKER}{STAGING} -->")
    assert "`beta`" in staging["body"] and "`alpha`" not in staging["body"]
    assert github[0].writes() == ["POST", "POST"]  # the second run found both unchanged
    plans = sorted(p.name for p in (action.cwd / "keysync-plans").iterdir())
    assert plans == ["deploy__prod__keysync.yaml.json", "deploy__staging__keysync.yaml.json"]


def test_two_manifests_that_would_share_a_plan_file_are_refused_before_planning(
    action: Action, github: tuple[FakeGitHub, str]
) -> None:
    action.manifest(["alpha"], name="a/b.yaml")
    action.manifest(["beta"], name="a__b.yaml")
    step = action("plan", manifest="a/b.yaml\na__b.yaml")
    assert step.code == 1
    assert "manifests a/b.yaml and a__b.yaml would share the plan file keysync-plans/a__b.yaml.json" in (
        step.stderr
    )
    assert not (action.cwd / "keysync-plans").exists() and github[0].writes() == []


def test_apply_applies_the_reviewed_plan_of_each_manifest(action: Action, two_deployments: str) -> None:
    assert action("plan", manifest=BOTH, allowed_hosts=two_deployments, comment="false").code == 0
    applied = action("apply", manifest=BOTH, allowed_hosts=two_deployments)
    assert applied.code == 0, applied.stderr
    assert "created alpha" in applied.summary and "created beta" in applied.summary
    assert applied.outputs == {"changes": "true", "exitcode": "0", "plan-file": "keysync-plans"}


def test_allowed_hosts_keep_a_manifests_credentials_from_other_hosts(
    action: Action, github: tuple[FakeGitHub, str], two_deployments: str
) -> None:
    prod_only = two_deployments.splitlines()[0]
    step = action("plan", manifest=BOTH, allowed_hosts=prod_only)
    assert step.code == 1 and step.outputs["exitcode"] == "1"
    prod, staging = github[0].ours()
    assert "`alpha`" in prod["body"]
    assert "**Failed**" in staging["body"] and "KEYSYNC_ALLOWED_HOSTS" in staging["body"]
    assert STAGING_TOKEN not in staging["body"]


def test_apply_refuses_a_stale_plan(action: Action, dev_server: DevServer) -> None:
    action.manifest(["gateway-a"])
    assert action("plan", comment="false").code == 0
    create_out_of_band(dev_server, "gateway-a")
    step = action("apply")
    assert step.code == 1
    assert step.outputs["exitcode"] == "1" and step.outputs["changes"] == "false"
    assert "no longer matches" in step.stderr and "Failed" in step.summary
    assert "::error title=keysync apply failed::keysync.yaml" in step.stdout


def test_apply_without_the_reviewed_plan_fails_and_plans_nothing(
    action: Action, github: tuple[FakeGitHub, str]
) -> None:
    action.manifest(["gateway-a"])
    step = action("apply")
    assert step.code == 1
    assert "no saved plan keysync-plan.json for keysync.yaml" in step.stderr
    assert github[0].requests == []


def test_a_failed_plan_fails_the_step_and_says_why_in_the_comment(
    action: Action, github: tuple[FakeGitHub, str]
) -> None:
    (action.cwd / "keysync.yaml").write_text("version: 1\nkeys: [Bad_Name]\n")
    step = action("plan")
    assert step.code == 1 and step.outputs["exitcode"] == "1"
    (comment,) = github[0].ours()
    assert "**Failed** (exit 1)" in comment["body"] and "Bad_Name" in comment["body"]


def test_off_pull_requests_auto_posts_no_comment(action: Action, github: tuple[FakeGitHub, str]) -> None:
    action.env["GITHUB_EVENT_NAME"] = "push"
    action.manifest(["gateway-a"])
    step = action("plan")
    assert step.code == 0 and step.outputs["changes"] == "true"
    assert github[0].requests == []


def test_a_refused_token_fails_the_step_naming_the_request(action: Action) -> None:
    action.manifest(["gateway-a"])
    step = action("plan", github_token="ghs_wrongToken")
    assert step.code == 1
    assert f"/repos/{REPO}/issues/{PR}/comments" in step.stderr and "401: Bad credentials" in step.stderr
    assert "ghs_wrongToken" not in step.stderr


def test_a_wrong_command_or_a_missing_keysync_fails_in_one_line(action: Action) -> None:
    wrong = action("destroy")
    assert (wrong.code, wrong.stderr) == (
        1,
        "keysync-action: error: command must be plan or apply, not 'destroy'\n",
    )
    action.env["KEYSYNC"] = str(action.cwd / "no-keysync-here")
    action.manifest(["gateway-a"])
    missing = action("plan")
    assert missing.code == 1
    assert (
        missing.stderr.startswith("keysync-action: error: cannot run ") and "Traceback" not in missing.stderr
    )


ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
CONTRACT_INPUTS = {"command", "manifest", "plan-file", "comment", "github-token", "version", "allowed-hosts"}


def test_action_yml_is_a_composite_action_with_the_contracts_inputs_and_outputs() -> None:
    assert ACTION["runs"]["using"] == "composite"
    assert set(ACTION["inputs"]) == CONTRACT_INPUTS
    assert set(ACTION["outputs"]) == {"changes", "exitcode", "plan-file"}
    assert ACTION["inputs"]["manifest"]["default"] == "keysync.yaml"
    assert ACTION["inputs"]["version"]["default"] == __version__
    assert all(step.get("shell", "bash") == "bash" for step in ACTION["runs"]["steps"])


def test_every_step_references_only_inputs_and_steps_that_exist() -> None:
    text = (ROOT / "action.yml").read_text()
    assert set(re.findall(r"\binputs\.([a-z-]+)", text)) <= set(ACTION["inputs"])
    step_ids = {step.get("id") for step in ACTION["runs"]["steps"]}
    assert set(re.findall(r"\bsteps\.([a-z-]+)\.outputs", text)) <= step_ids
    passed = {name for step in ACTION["runs"]["steps"] for name in step.get("env", {})}
    read = set(re.findall(r'"(INPUT_[A-Z_]+)"', SCRIPT.read_text()))
    assert read <= passed, "the script reads inputs the action does not pass"
    assert {f"INPUT_{name.upper().replace('-', '_')}" for name in ACTION["inputs"]} - {
        "INPUT_VERSION"
    } <= read


def test_the_install_step_installs_the_pinned_distribution() -> None:
    (install,) = (step for step in ACTION["runs"]["steps"] if step.get("id") == "install")
    assert '"coder-keysync==$VERSION"' in install["run"]
    assert install["env"]["VERSION"] == "${{ inputs.version }}"


GITHUB_WORKFLOWS = [ROOT / "examples" / "ci" / name for name in ("github-actions.yaml", "drift-nightly.yaml")]


def _steps(path: Path) -> list[tuple[str, dict[str, Any]]]:
    jobs = yaml.safe_load(path.read_text())["jobs"]
    return [(name, step) for name, job in jobs.items() for step in job["steps"]]


@pytest.mark.parametrize("path", GITHUB_WORKFLOWS, ids=lambda p: p.name)
def test_example_workflows_give_the_action_only_its_inputs(path: Path) -> None:
    uses = [step for _, step in _steps(path) if step.get("uses", "").startswith("keysync/keysync@")]
    assert uses, f"{path.name} does not use the action"
    for step in uses:
        assert set(step["with"]) <= set(ACTION["inputs"]), step["with"]
        assert step["with"]["command"] in ("plan", "apply")


def test_the_example_applies_the_artifact_of_the_reviewed_plan() -> None:
    steps = _steps(ROOT / "examples" / "ci" / "github-actions.yaml")
    plan = [s for job, s in steps if job == "plan"]
    apply = [s for job, s in steps if job == "apply"]
    (upload,) = (s for s in plan if "upload-artifact" in s.get("uses", ""))
    (download,) = (s for s in apply if "download-artifact" in s.get("uses", ""))
    (planning,) = (s for s in plan if s.get("with", {}).get("command") == "plan")
    (applying,) = (s for s in apply if s.get("with", {}).get("command") == "apply")
    assert upload["with"]["path"] == planning["with"]["plan-file"] == applying["with"]["plan-file"]
    assert (
        upload["with"]["name"].replace("github.event.pull_request.head.sha", "steps.reviewed.outputs.head")
        == (download["with"]["name"])
    )
    assert apply.index(download) < apply.index(applying)


def test_zizmor_finds_nothing_in_the_action_and_the_example_workflows() -> None:
    config = ROOT / "examples" / "ci" / "zizmor.yml"
    files = [ROOT / "action.yml", *GITHUB_WORKFLOWS]
    zizmor = Path(sys.executable).with_name("zizmor")
    done = subprocess.run(
        [
            zizmor,
            "--offline",
            "--no-progress",
            "--persona",
            "auditor",
            "--config",
            str(config),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
