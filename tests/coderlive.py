"""Looking at the dev server the way an operator would: its key list, and a replica's view."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from keysync.coder.client import COLLECTIONS
from keysync.devserver import DevServer

import replica

SERVE = replica.SERVE
GATEWAY_HEADER = replica.GATEWAY_HEADER
IN = replica.IN
TLS = ssl.create_default_context()


def live_keys(server: DevServer) -> dict[str, dict[str, Any]]:
    response = httpx.get(
        server.url + COLLECTIONS[server.config.api],
        headers={"Coder-Session-Token": server.token},
        verify=TLS,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return {key["name"]: key for key in response.json()}


def create_out_of_band(server: DevServer, name: str) -> dict[str, Any]:
    response = httpx.post(
        server.url + COLLECTIONS[server.config.api],
        headers={"Coder-Session-Token": server.token},
        json={"name": name},
        verify=TLS,
        trust_env=False,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def delete_out_of_band(server: DevServer, key_id: str) -> None:
    response = httpx.delete(
        f"{server.url}{COLLECTIONS[server.config.api]}/{key_id}",
        headers={"Coder-Session-Token": server.token},
        verify=TLS,
        trust_env=False,
    )
    assert response.status_code in (200, 204), response.text


def gateway_status(server: DevServer, secret: str) -> int:
    """What a gateway replica presenting this secret gets: 101 (`IN`) connects it and marks the key
    as in use (its heartbeat), 401 refuses it."""
    return replica.gateway_status(server.url, secret)
