"""The installed `keysync` against the dev server's sliding-window rate limit: an apply of
three windows' worth of creates meets it at most once, and finishes every create."""

from __future__ import annotations

import io
import json
from pathlib import Path

from keysync.devserver import DevServer, DevServerConfig

from conftest import OWNER_TOKEN, Cli, base_env


def test_an_apply_is_paced_to_the_rate_limit(tmp_path: Path) -> None:
    log = io.StringIO()
    config = DevServerConfig(
        port=0, token=OWNER_TOKEN, seed=7, api="ai-gateway-keys", rate_limit=4, rate_window=1.0
    )
    with DevServer(config, log=log) as server:
        cli = Cli(tmp_path, {**base_env(), "CODER_URL": server.url, "CODER_SESSION_TOKEN": server.token})
        names = [f"key-{n}" for n in range(11)]  # with the list: three windows' worth
        cli.write_manifest("version: 1\nkeys:\n" + "".join(f"  - {name}\n" for name in names))
        run = cli("apply", "--auto-approve", "--parallelism", "4")
    assert run.code == 0, run
    assert sorted(json.loads((tmp_path / "secrets" / "ai-gateway-keys.json").read_text())["keys"]) == sorted(
        names
    )
    lines = log.getvalue().splitlines()
    assert sum(" /api/v2/ai-gateway/keys 201 " in line for line in lines) == len(names)
    refused = [line for line in lines if " 429 " in line]
    assert len(refused) <= 1, refused  # the first request after the first window's end, at most
