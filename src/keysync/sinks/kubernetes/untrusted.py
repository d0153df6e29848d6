"""A kubeconfig that the manifest alone chose (`sink.kubeconfig` with KUBECONFIG unset) is as
untrusted as the manifest: a pull request can add the file. Its exec plugin would run the pull
request's command, and its credential files would let the pull request choose both a file on the
machine to read and the server to send it to. Inline tokens and keys are the manifest's own and
may go where it says; a CA file is not a secret."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keysync.errors import SinkError
from keysync.hosts import ALLOWED_HOSTS, pinned, require_allowed

CREDENTIAL_FILES = ("tokenFile", "client-certificate", "client-key")


def refuse_manifest_credentials(
    user: Mapping[str, Any], file: Path, server: str, env: Mapping[str, str]
) -> None:
    """Raises before anything runs or is read: an exec plugin always, a credential file unless
    KEYSYNC_ALLOWED_HOSTS allows the server it would go to."""
    where = f"kubeconfig {file} (the manifest's sink.kubeconfig, KUBECONFIG unset)"
    if user.get("exec") is not None:
        raise SinkError(
            f"{where}: keysync does not run the exec credential plugin of a kubeconfig the manifest "
            f"chose (a pull request could add it): set KUBECONFIG={file} instead to use it"
        )
    named = [setting for setting in CREDENTIAL_FILES if user.get(setting)]
    if not named:
        return
    if pinned(env):
        require_allowed(server, env, f"the Kubernetes API server of {where}")
        return
    raise SinkError(
        f"{where}: its {named[0]} is read only when the environment names the cluster: set "
        f"KUBECONFIG={file} instead (or {ALLOWED_HOSTS} to allow {server}), so that the manifest "
        "alone cannot choose both a file to read and where to send it"
    )
