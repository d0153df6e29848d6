"""A third-party sink, built and pip-installed as its own distribution, found through
the `keysync.sinks` entry-point group by the real `keysync` command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import Cli

PYPROJECT = """
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "keysync-echo-sink"
version = "0.1.0"

[project.entry-points."keysync.sinks"]
echo = "keysync_echo_sink:EchoSink"
"""

# setuptools 65 cannot build a wheel without the `wheel` package, and this test must run offline,
# so the plugin brings a PEP 517 backend of its own: one package, metadata from pyproject.toml.
BACKEND = """
import base64, hashlib, tomllib, zipfile
from pathlib import Path


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    dist = f"{project['name'].replace('-', '_')}-{project['version']}"
    groups = project.get("entry-points", {})
    files = {f"{path.parent.name}/{path.name}": path.read_bytes() for path in Path().glob("*/*.py")}
    files[f"{dist}.dist-info/METADATA"] = (
        f"Metadata-Version: 2.1\\nName: {project['name']}\\nVersion: {project['version']}\\n"
    ).encode()
    files[f"{dist}.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\\nGenerator: keysync-tests\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    )
    files[f"{dist}.dist-info/entry_points.txt"] = "".join(
        f"[{group}]\\n" + "".join(f"{name} = {target}\\n" for name, target in points.items())
        for group, points in groups.items()
    ).encode()
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()]
    files[f"{dist}.dist-info/RECORD"] = ("\\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\\n").encode()
    wheel = f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def _digest(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
"""

PLUGIN = '''
"""A sink that keeps records in a JSON file of its own: enough to prove the plugin contract."""

import json
from contextlib import nullcontext
from typing import Literal

from pydantic import BaseModel, ConfigDict

from keysync.errors import SinkError
from keysync.keys import SinkView, StoredEntry


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["echo"] = "echo"
    path: str


class EchoSink:
    config_model = EchoConfig

    def __init__(self, config, context):
        self._path = context.resolve(config.path)
        self._url = context.coderd_url

    def describe(self):
        return f"echo {self._path}"

    def _load(self):
        return json.loads(self._path.read_text()) if self._path.exists() else {}

    def read(self):
        entries = {
            name: StoredEntry(name, r["id"], r["key_prefix"], r["key"][:11], r["coderd_url"])
            for name, r in self._load().items()
            if r["coderd_url"] == self._url
        }
        return SinkView(entries)

    def check_writable(self):
        if not self._path.parent.is_dir():
            raise SinkError(f"echo sink: {self._path.parent} is not a directory")

    def store(self, record):
        records = self._load()
        records[record.name] = record.document()
        self._path.write_text(json.dumps(records))

    def remove(self, name, key_id=""):
        records = self._load()
        records.pop(name, None)
        self._path.write_text(json.dumps(records))

    def lock(self, timeout):
        return nullcontext()

    def local_paths(self):
        return []

    def close(self):
        pass
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin built from source and pip-installed into a directory of its own."""
    root = tmp_path_factory.mktemp("plugin")
    source, site = root / "keysync-echo-sink", root / "site"
    (source / "keysync_echo_sink").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "backend.py").write_text(BACKEND)
    (source / "keysync_echo_sink" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*pip, "--no-index", "--disable-pip-version-check", "--target", str(site), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "keysync_echo_sink-0.1.0.dist-info" / "entry_points.txt").exists()
    return site


@pytest.fixture
def plugin_cli(cli: Cli, plugin_site: Path) -> Cli:
    cli.env["PYTHONPATH"] = str(plugin_site)
    return cli


def manifest(keys: list[str], **settings: str) -> str:
    return json.dumps({"version": 1, "sink": {"type": "echo", **settings}, "keys": keys})


def test_validate_uses_the_plugins_settings_model(plugin_cli: Cli) -> None:
    plugin_cli.write_manifest(manifest(["alpha"], path="echo.json"))
    assert plugin_cli("validate").code == 0

    plugin_cli.write_manifest(manifest(["alpha"], path="echo.json", colour="red"))
    run = plugin_cli("validate")
    assert run.code == 1 and "colour" in run.stderr, run


def test_a_plugin_that_is_not_thread_safe_loses_nothing_to_a_parallel_apply(plugin_cli: Cli) -> None:
    """The echo sink reads, changes and rewrites its file without a lock: keysync must not call
    it from two threads at once, since it does not declare `concurrent_writes`."""
    names = [f"key-{i:02d}" for i in range(40)]
    plugin_cli.write_manifest(manifest(names, path="echo.json"))

    run = plugin_cli("apply", "--auto-approve", "--parallelism", "16")

    assert run.code == 0, run
    assert sorted(json.loads((plugin_cli.cwd / "echo.json").read_text())) == names
    assert plugin_cli("plan", "--detailed-exitcode").code == 0


def test_apply_delivers_to_the_plugin_and_plan_reads_it_back(plugin_cli: Cli) -> None:
    plugin_cli.write_manifest(manifest(["alpha", "beta"], path="echo.json"))

    run = plugin_cli("apply", "--auto-approve")

    assert run.code == 0, run
    records = json.loads((plugin_cli.cwd / "echo.json").read_text())
    assert sorted(records) == ["alpha", "beta"]
    assert all(record["key"][:11] == record["key_prefix"] for record in records.values())
    plan = plugin_cli("plan", "--detailed-exitcode")
    assert plan.code == 0, plan

    plugin_cli.write_manifest(manifest(["alpha"], path="echo.json"))
    assert plugin_cli("apply", "--auto-approve").code == 0
    assert sorted(json.loads((plugin_cli.cwd / "echo.json").read_text())) == ["alpha"]
    assert all(r["key"] not in run.stdout + run.stderr for r in records.values())


def test_without_the_plugin_installed_the_type_is_unknown(cli: Cli) -> None:
    cli.write_manifest(manifest(["alpha"], path="echo.json"))
    run = cli("validate")
    assert run.code == 1 and "unknown sink type 'echo'" in run.stderr, run
