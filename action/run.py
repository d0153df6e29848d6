"""The keysync GitHub Action: plan (job summary, one pull-request comment per manifest) or apply
the reviewed saved plan. Inputs come as INPUT_* variables, set by action.yml; standard library only."""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from comments import GitHub, GitHubError, sync
from messages import comment_body, footer, nothing_pending, section

PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target")


@dataclass(frozen=True)
class Inputs:
    command: str
    manifests: list[str]
    plan_files: list[Path]
    comment: bool
    allowed_hosts: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Inputs:
        command = env.get("INPUT_COMMAND", "plan").strip()
        if command not in ("plan", "apply"):
            raise SystemExit(f"keysync-action: error: command must be plan or apply, not {command!r}")
        manifests = manifest_list(env.get("INPUT_MANIFEST", ""))
        comment = env.get("INPUT_COMMENT", "auto").strip().lower()
        on_pr = env.get("GITHUB_EVENT_NAME") in PULL_REQUEST_EVENTS
        hosts = ",".join(env.get("INPUT_ALLOWED_HOSTS", "").split())
        plan_files = plan_paths(env.get("INPUT_PLAN_FILE", "").strip(), manifests)
        return cls(command, manifests, plan_files, comment == "true" or (comment == "auto" and on_pr), hosts)


def manifest_list(text: str) -> list[str]:
    """One path a line; the path as written (normalised) names the manifest's comment."""
    paths = [posixpath.normpath(line.strip()) for line in text.splitlines() if line.strip()]
    if len(set(paths)) != len(paths):
        raise SystemExit("keysync-action: error: a manifest is listed twice")
    return paths or ["keysync.yaml"]


def plan_paths(plan_file: str, manifests: list[str]) -> list[Path]:
    """One manifest: plan-file is the plan. Several: a directory holding one plan per manifest."""
    if len(manifests) == 1:
        return [Path(plan_file or "keysync-plan.json")]
    folder = Path(plan_file or "keysync-plans")
    paths = [folder / (manifest.replace("/", "__") + ".json") for manifest in manifests]
    for path in {path for path in paths if paths.count(path) > 1}:
        sharing = " and ".join(m for m, p in zip(manifests, paths, strict=True) if p == path)
        raise SystemExit(f"keysync-action: error: manifests {sharing} would share the plan file {path}")
    return paths


@dataclass(frozen=True)
class Result:
    manifest: str
    plan_file: Path
    exitcode: int
    stdout: str
    stderr: str


def keysync_env(inputs: Inputs) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INPUT_")}  # the GitHub token stays here
    if inputs.allowed_hosts:
        env["KEYSYNC_ALLOWED_HOSTS"] = inputs.allowed_hosts
    env.setdefault("NO_COLOR", "1")
    return env


def run_keysync(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    keysync = os.environ.get("KEYSYNC", "keysync")
    try:
        done = subprocess.run([keysync, *args], env=env, capture_output=True, text=True)
    except OSError as exc:
        raise SystemExit(f"keysync-action: error: cannot run {keysync}: {exc.strerror}") from None
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done


def plan(inputs: Inputs) -> list[Result]:
    env, results = keysync_env(inputs), []
    for manifest, plan_file in zip(inputs.manifests, inputs.plan_files, strict=True):
        plan_file.parent.mkdir(parents=True, exist_ok=True)
        args = [
            "plan",
            "-f",
            manifest,
            "--format",
            "markdown",
            "--detailed-exitcode",
            "--out",
            str(plan_file),
        ]
        done = run_keysync(args, env)
        results.append(Result(manifest, plan_file, done.returncode, done.stdout, done.stderr))
    return results


def apply(inputs: Inputs) -> list[Result]:
    """Applies each manifest's reviewed plan; a missing or stale plan fails and stops the rest."""
    env, results = keysync_env(inputs), []
    for manifest, plan_file in zip(inputs.manifests, inputs.plan_files, strict=True):
        if not plan_file.is_file():
            missing = f"keysync-action: error: no saved plan {plan_file} for {manifest}: apply only applies "
            missing += "the reviewed plan (download the plan job's artifact first)\n"
            sys.stderr.write(missing)
            results.append(Result(manifest, plan_file, 1, "", missing))
            break
        done = run_keysync(["apply", "-f", manifest, "--no-color", str(plan_file)], env)
        results.append(Result(manifest, plan_file, done.returncode, done.stdout, done.stderr))
        if done.returncode != 0:
            break
    return results


def overall_exitcode(results: list[Result]) -> int:
    codes = {r.exitcode for r in results}
    if codes - {0, 2}:
        return 1
    return 2 if 2 in codes else 0


def has_changes(inputs: Inputs, results: list[Result]) -> bool:
    if inputs.command == "plan":
        return any(r.exitcode == 2 for r in results)
    return any(_planned_actions(r.plan_file) for r in results if r.exitcode == 0)


def _planned_actions(plan_file: Path) -> int:
    return len(json.loads(plan_file.read_text(encoding="utf-8")).get("actions", []))


def read_event(env: Mapping[str, str]) -> dict[str, object]:
    path = env.get("GITHUB_EVENT_PATH")
    if not path or not Path(path).is_file():
        return {}
    event = json.loads(Path(path).read_text(encoding="utf-8"))
    return event if isinstance(event, dict) else {}


def pull_request_number(event: Mapping[str, object]) -> int | None:
    pull = event.get("pull_request")
    number = pull.get("number") if isinstance(pull, dict) else event.get("number")
    return number if isinstance(number, int) else None


def post_comments(results: list[Result], env: Mapping[str, str]) -> None:
    event = read_event(env)
    number = pull_request_number(event)
    if number is None:
        sys.stderr.write("keysync-action: comment is on but this run is not for a pull request: no comment\n")
        return
    token = env.get("INPUT_GITHUB_TOKEN", "")
    if not token:
        raise GitHubError("keysync-action: comment is on but github-token is empty")
    github = GitHub(env.get("GITHUB_API_URL", "https://api.github.com"), env["GITHUB_REPOSITORY"], token)
    note = footer(env, event)
    for result in results:
        done = sync(
            github,
            number,
            result.manifest,
            comment_body(result, note),
            nothing_pending(result.manifest, note),
        )
        sys.stderr.write(f"keysync-action: comment for {result.manifest}: {done}\n")


def append(path_variable: str, text: str) -> None:
    path = os.environ.get(path_variable)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(text)


def report(inputs: Inputs, results: list[Result]) -> int:
    code = overall_exitcode(results)
    append("GITHUB_STEP_SUMMARY", "".join(section(inputs.command, r) + "\n\n" for r in results))
    plan_file = inputs.plan_files[0] if len(inputs.plan_files) == 1 else inputs.plan_files[0].parent
    changes = "true" if has_changes(inputs, results) else "false"
    append("GITHUB_OUTPUT", f"changes={changes}\nexitcode={code}\nplan-file={plan_file}\n")
    for result in results:
        if result.exitcode not in (0, 2):
            print(f"::error title=keysync {inputs.command} failed::{result.manifest}")
    return code


def main() -> int:
    inputs = Inputs.from_env(os.environ)
    results = plan(inputs) if inputs.command == "plan" else apply(inputs)
    code = report(inputs, results)
    if inputs.command == "plan" and inputs.comment:
        try:
            post_comments(results, os.environ)
        except GitHubError as exc:
            sys.stderr.write(f"{exc}\n")
            return 1
    return 1 if code == 1 else 0


if __name__ == "__main__":
    sys.exit(main())
