"""The vault sink's end-to-end tests share these: a path prefix of its own per test on the
session's OpenBao dev server, `keysync` pointed at that server, a manifest writing under the
prefix, a read-only policy, and the checks that nothing leaked and what the sink's lock holds."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from baoserver import Bao
from conftest import Cli

READ_ONLY = """
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read", "list"] }
"""


@pytest.fixture
def prefix() -> str:
    """A directory of its own for each test: the server is shared by the session."""
    return f"t{uuid.uuid4().hex[:10]}"


def manifest(prefix: str, keys: list[str]) -> str:
    return f"version: 1\nsink:\n  type: vault\n  path: {prefix}/{{name}}\nkeys: {json.dumps(keys)}\n"


@pytest.fixture
def vault_cli(cli: Cli, bao: Bao) -> Cli:
    cli.env.update(VAULT_ADDR=bao.address, VAULT_TOKEN=bao.root_token)
    return cli


def assert_nothing_leaked(cli: Cli, bao: Bao, *tokens: str) -> None:
    for run in cli.runs:
        for token in (bao.root_token, *tokens):
            assert token not in run.stdout + run.stderr, run


def lock_entry(bao: Bao, prefix: str) -> dict[str, Any]:
    entry: dict[str, Any] = bao.ok("GET", f"secret/data/{prefix}/.keysync-lock")["data"]["data"]
    return entry
