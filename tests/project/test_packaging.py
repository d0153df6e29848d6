"""The distribution as PyPI would get it: built once, checked by twine, installed into a fresh venv."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from keysync import __version__
from keysync.manifest.schema import schema_text

ROOT = Path(__file__).resolve().parents[2]
DIST_NAME = "coder-keysync"
PINNED = re.compile(rf"{DIST_NAME}(\[[a-z,]+\])?=={re.escape(__version__)}")
DOCS = [ROOT / "README.md", *sorted((ROOT / "examples").rglob("*.yaml"))]


def _source_copy(into: Path) -> Path:
    """The tree a release is built from, copied so the build writes nothing into the work tree."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("src", "schemas"):
        shutil.copytree(ROOT / name, into / name, symlinks=True, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, into / name)
    return into


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = _source_copy(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("dist")
    # No isolation: the build backend comes from the test extra, so the build needs no network.
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("*.whl")
    return wheel


def _sdist(dist: Path) -> Path:
    (sdist,) = dist.glob("*.tar.gz")
    return sdist


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = (n for n in wheel.namelist() if n.endswith(f".dist-info/{name}"))
    return wheel.read(path).decode()


def test_the_distribution_name_is_ours_and_the_import_stays_keysync() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST_NAME
    assert project["scripts"] == {"keysync": "keysync.cli.entry:main"}
    assert project["version"] == __version__


def test_twine_accepts_the_sdist_and_the_wheel(dist: Path) -> None:
    files = [str(_sdist(dist)), str(_wheel(dist))]
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2


def test_the_wheel_carries_the_schema_py_typed_and_the_keysync_command(dist: Path) -> None:
    assert _wheel(dist).name == f"coder_keysync-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        assert wheel.read("keysync/py.typed") == b""
        packaged = wheel.read("keysync/keysync.schema.json").decode()
        metadata = _dist_info(wheel, "METADATA")
        scripts = _dist_info(wheel, "entry_points.txt").split("[console_scripts]")[1].split("[")[0]
    assert packaged == (ROOT / "schemas" / "keysync.schema.json").read_text()
    assert f"Name: {DIST_NAME}\n" in metadata and f"Version: {__version__}\n" in metadata
    assert scripts.split() == ["keysync", "=", "keysync.cli.entry:main"]


def test_the_sdist_carries_the_schema_as_a_file(dist: Path) -> None:
    with tarfile.open(_sdist(dist)) as sdist:
        member = sdist.getmember(f"coder_keysync-{__version__}/src/keysync/keysync.schema.json")
        assert member.isfile()
        extracted = sdist.extractfile(member)
        assert extracted is not None
        assert extracted.read().decode() == (ROOT / "schemas" / "keysync.schema.json").read_text()


def test_the_wheel_installed_in_a_fresh_venv_runs(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    subprocess.run([*install, "--no-index", str(_wheel(dist))], check=True, capture_output=True)
    # The dependencies come from the test venv (found after the fresh site-packages, so `keysync`
    # itself is the wheel's): installing them from an index would make this test slow and online.
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    keysync = venv / "bin" / "keysync"
    version = subprocess.run([keysync, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout == f"keysync, version {__version__}\n"
    where = subprocess.run(
        [python, "-c", "import keysync; print(keysync.__file__)"], capture_output=True, text=True
    )
    assert where.stdout.startswith(site), where.stdout + where.stderr
    schema = subprocess.run([keysync, "schema"], capture_output=True, text=True, check=True)
    assert schema.stdout == schema_text()
    manifest = ROOT / "examples" / "minimal.yaml"
    valid = subprocess.run([keysync, "validate", "-f", str(manifest)], capture_output=True, text=True)
    assert valid.returncode == 0, valid.stderr


def _install_lines(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [line for line in lines if re.search(r"pip(x)? install\b(?! -e)", line)]


def _requirements(line: str) -> list[str]:
    """What one `pip install ...` asks for, up to the end of that shell command."""
    command = re.split(r"&&|;|\|", line.split("install", 1)[1])[0]
    return [word.strip("'\"`") for word in command.split() if not word.startswith("-")]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_install_the_pinned_distribution(path: Path) -> None:
    for line in _install_lines(path):
        assert PINNED.search(line), f"{path.name}: {line.strip()}"
        bare = [word for word in _requirements(line) if re.match(r"keysync\b", word)]
        assert not bare, f"{path.name}: {line.strip()}"


def test_the_readme_and_the_ci_examples_say_how_to_install() -> None:
    for path in (ROOT / "README.md", *sorted((ROOT / "examples" / "ci").glob("*.yaml"))):
        assert _install_lines(path) or "uses: " in path.read_text(), path.name
