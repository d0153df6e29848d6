"""keysync reaches Coder through the proxy that HTTP(S)_PROXY / ALL_PROXY name, unless NO_PROXY says not.

A small relay on 127.0.0.1 plays the proxy: it takes each absolute-form request, notes its target
and forwards it to the real dev server.
"""

from __future__ import annotations

import pytest
from relay import Relay, relay

from conftest import Cli

__all__ = ["relay"]  # a fixture: pytest finds it here

MANIFEST = "version: 1\nsink: {type: file, path: secrets.json}\nkeys: [alpha, beta]\n"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_every_request_goes_through_the_proxy(cli: Cli, relay: Relay, variable: str) -> None:
    cli.write_manifest(MANIFEST)
    cli.env[variable] = relay.url

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    url = cli.env["CODER_URL"]
    methods = [target.split()[0] for target in relay.targets]
    assert all(target.split()[1].startswith(f"{url}/api/v2/") for target in relay.targets), relay.targets
    assert methods.count("GET") >= 1 and methods.count("POST") == 2, relay.targets
    assert cli("plan", "--detailed-exitcode").code == 0


def test_no_proxy_sends_requests_straight_to_coder(cli: Cli, relay: Relay) -> None:
    cli.write_manifest(MANIFEST)
    cli.env.update(HTTP_PROXY=relay.url, NO_PROXY="127.0.0.1,localhost")

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    assert relay.targets == []


def test_an_unreachable_proxy_is_one_clear_error(cli: Cli) -> None:
    cli.write_manifest(MANIFEST)
    cli.env["HTTP_PROXY"] = "http://proxyuser:Pr0xyPassw0rd@127.0.0.1:9"  # discard port: nothing listens

    run = cli("plan")

    assert run.code == 1
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run
    assert f"cannot reach {cli.env['CODER_URL']} through the proxy http://127.0.0.1:9:" in run.stderr
    assert "Pr0xyPassw0rd" not in run.stderr and "proxyuser" not in run.stderr


def test_a_proxy_keysync_cannot_use_is_refused_before_any_request(cli: Cli) -> None:
    cli.write_manifest(MANIFEST)
    cli.env["ALL_PROXY"] = "ftp://someone:Pr0xyPassw0rd@127.0.0.1:2121"

    run = cli("plan")

    assert run.code == 1
    assert run.stderr.startswith("keysync: error: cannot use the proxy ftp://127.0.0.1:2121 "), run
    assert "Pr0xyPassw0rd" not in run.stderr and "someone" not in run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def test_a_proxy_named_without_a_scheme_is_an_http_proxy(cli: Cli, relay: Relay) -> None:
    cli.write_manifest(MANIFEST)
    cli.env["HTTP_PROXY"] = relay.url.removeprefix("http://")  # host:port, as many set it

    run = cli("apply", "--auto-approve")

    assert run.code == 0, run
    assert [target.split()[0] for target in relay.targets].count("POST") == 2, relay.targets
