"""Finding the cluster and credentials as kubectl does, against the emulator: merged kubeconfigs,
contexts and namespaces, token files that rotate, exec plugins (real scripts), TLS with a private
CA and client certificates, the pod's service account, and the rails on where tokens may go."""

from __future__ import annotations

import base64
import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from relay import Relay, relay

from keysync.errors import SinkError, UsageError
from keysync.sinks.kubernetes.api import _environment_proxy

from kubeemu import KubeEmu, Rule
from kubefixtures import NS, Make, emu_fixture, make_fixture, record

__all__ = ["emu_fixture", "make_fixture", "relay"]


def kubeconfig(path: Path, server: str, user: dict[str, Any], *, namespace: str = NS, **cluster: Any) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(document))
    return path


def env_for(path: Path, **extra: str) -> dict[str, str]:
    return {"KUBECONFIG": str(path), **extra}


# --- kubeconfig files, contexts, namespaces --------------------------------------------------------


def test_kubeconfig_files_merge_and_the_first_to_name_an_entry_wins(
    emu: KubeEmu, make: Make, tmp_path: Path
) -> None:
    emu.add_user("second", "second-token")
    emu.namespace("elsewhere")
    first = {
        "current-context": "main",
        "contexts": [{"name": "main", "context": {"cluster": "emu", "user": "me", "namespace": NS}}],
        "users": [{"name": "me", "user": {"token": emu.token}}],
    }
    second = {
        "current-context": "other",
        "clusters": [{"name": "emu", "cluster": {"server": emu.url}}],
        "contexts": [{"name": "main", "context": {"cluster": "emu", "user": "me", "namespace": "elsewhere"}}],
        "users": [{"name": "me", "user": {"token": "second-token"}}],
    }
    (tmp_path / "a").write_text(yaml.safe_dump(first))
    (tmp_path / "b").write_text(yaml.safe_dump(second))

    sink = make(env={"KUBECONFIG": f"{tmp_path / 'a'}:{tmp_path / 'missing'}:{tmp_path / 'b'}"})
    sink.store(record("alpha"))

    assert sink.namespace == NS
    assert emu.secret(NS, "alpha") is not None
    assert emu.seen[-1].headers["authorization"] == f"Bearer {emu.token}"


def test_a_named_context_and_its_namespace(emu: KubeEmu, make: Make, tmp_path: Path) -> None:
    emu.namespace("team-b")
    path = emu.kubeconfig(tmp_path / "config", namespace="team-b", context="team-b")
    assert make(env=env_for(path), context="team-b").namespace == "team-b"
    assert make(env=env_for(path), context="team-b", namespace=NS).namespace == NS
    with pytest.raises(SinkError, match=r"no context named 'prod' \(contexts: team-b\)"):
        make(env=env_for(path), context="prod")


def test_without_a_namespace_anywhere_it_is_default(emu: KubeEmu, make: Make, tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", emu.url, {"token": emu.token}, namespace="")
    assert make(env=env_for(path)).namespace == "default"


def test_the_home_kubeconfig_is_the_fallback(emu: KubeEmu, make: Make, tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    emu.kubeconfig(tmp_path / ".kube" / "config", namespace=NS)
    make(env={"KUBECONFIG": ""}).store(record("alpha"))
    assert emu.secret(NS, "alpha") is not None


def test_kubeconfig_env_wins_over_the_manifest_and_plan_says_so(
    emu: KubeEmu, make: Make, tmp_path: Path
) -> None:
    chosen = emu.kubeconfig(tmp_path / "chosen", namespace=NS)
    sink = make(env=env_for(chosen), kubeconfig="elsewhere/config")
    assert sink.endpoint_warnings == [
        f"KUBECONFIG ({chosen}) overrides the manifest's sink.kubeconfig (elsewhere/config): "
        "the Kubernetes credentials are read from the files KUBECONFIG lists"
    ]


def test_no_kubeconfig_anywhere_is_one_line(make: Make, tmp_path: Path) -> None:
    with pytest.raises(SinkError, match=r"no kubeconfig at .*\.kube/config .* and not in a pod"):
        make(env={"KUBECONFIG": ""})


def test_plain_http_is_refused_off_loopback(make: Make, tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", "http://kube.example.com:6443", {"token": "t"})
    with pytest.raises(SinkError, match=r"refusing plain http:// to kube\.example\.com"):
        make(env=env_for(path))


def test_allowed_hosts_pin_the_api_server(emu: KubeEmu, make: Make, tmp_path: Path) -> None:
    path = emu.kubeconfig(tmp_path / "config", namespace=NS)
    with pytest.raises(UsageError, match=r"KEYSYNC_ALLOWED_HOSTS does not allow 127\.0\.0\.1"):
        make(env=env_for(path, KEYSYNC_ALLOWED_HOSTS="kube.example.com"))
    assert emu.seen == []


def test_proxy_url_carries_every_request(emu: KubeEmu, make: Make, tmp_path: Path, relay: Relay) -> None:
    path = kubeconfig(tmp_path / "config", emu.url, {"token": emu.token}, **{"proxy-url": relay.url})
    make(env=env_for(path)).read()
    assert relay.targets == [
        f"GET {emu.url}/api/v1/namespaces/{NS}/secrets?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dkeysync"
    ]


@pytest.mark.parametrize(
    ("server", "env", "expected"),
    [
        ("https://kube.example.com:6443", {"HTTPS_PROXY": "proxy:3128"}, "http://proxy:3128"),
        ("https://kube.example.com:6443", {"https_proxy": "http://p:1", "NO_PROXY": ".example.com"}, None),
        (
            "https://kube.example.com",
            {"HTTPS_PROXY": "http://p:1", "no_proxy": "x.org,kube.example.com:443"},
            None,
        ),
        ("https://kube.example.com", {"HTTP_PROXY": "http://p:1"}, None),  # not for https
        ("https://127.0.0.1:6443", {"HTTPS_PROXY": "http://p:1"}, None),  # never for loopback
    ],
)
def test_proxies_from_the_environment_as_kubectl_takes_them(
    server: str, env: dict[str, str], expected: str | None
) -> None:
    assert _environment_proxy(server, env) == expected


def test_auth_providers_are_refused_with_advice(make: Make, tmp_path: Path, emu: KubeEmu) -> None:
    path = kubeconfig(tmp_path / "config", emu.url, {"auth-provider": {"name": "gcp"}})
    with pytest.raises(SinkError, match=r"auth-provider 'gcp' is no longer supported.*gke-gcloud"):
        make(env=env_for(path))


# --- token files ------------------------------------------------------------------------------------


def test_a_token_file_relative_to_its_kubeconfig_is_read_again_when_refused(
    emu: KubeEmu, make: Make, tmp_path: Path
) -> None:
    (tmp_path / "kube").mkdir()
    token = tmp_path / "kube" / "token"
    token.write_text("first-token\n")
    emu.add_user("robot", "first-token")
    path = kubeconfig(tmp_path / "kube" / "config", emu.url, {"tokenFile": "token"})
    sink = make(env=env_for(path))
    sink.store(record("alpha"))

    token.write_text("second-token\n")  # the kubelet rotates the bound token
    del emu.tokens["first-token"]
    emu.add_user("robot", "second-token")
    sink.store(record("beta"))

    assert emu.secret(NS, "beta") is not None
    sent = [(s.method, s.headers["authorization"][len("Bearer ") :]) for s in emu.seen[-3:]]
    assert sent == [("GET", "first-token"), ("GET", "second-token"), ("POST", "second-token")]


# --- exec credential plugins --------------------------------------------------------------------------

PLUGIN = """#!{python}
import json, os, sys
with open(os.environ["COUNTER"], "a") as counter:
    counter.write("run\\n")
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["spec"]["interactive"] is False, info
assert sys.argv[1:] == ["get-token", "--cluster", "emu"], sys.argv
if os.environ.get("FAIL"):
    print("plugin: cannot reach the identity provider", file=sys.stderr)
    sys.exit(3)
tokens = open(os.environ["TOKENS"]).read().split()
status = {{"token": tokens[min(len(tokens), sum(1 for _ in open(os.environ["COUNTER"]))) - 1]}}
if os.environ.get("EXPIRES"):
    status["expirationTimestamp"] = os.environ["EXPIRES"]
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}}))
"""


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    script = tmp_path / "bin" / "token-plugin"
    script.parent.mkdir()
    script.write_text(PLUGIN.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def exec_user(plugin: Path, tmp_path: Path, api_version: str, **env: str) -> dict[str, Any]:
    variables = {"COUNTER": str(tmp_path / "runs"), "TOKENS": str(tmp_path / "tokens"), **env}
    return {
        "exec": {
            "apiVersion": api_version,
            "command": str(plugin),
            "args": ["get-token", "--cluster", "emu"],
            "env": [{"name": k, "value": v} for k, v in variables.items()],
            "interactiveMode": "Never",
            "installHint": "install it with: pip install token-plugin",
        }
    }


def runs(tmp_path: Path) -> int:
    counter = tmp_path / "runs"
    return len(counter.read_text().split()) if counter.exists() else 0


@pytest.mark.parametrize(
    "api_version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"]
)
def test_an_exec_plugins_token_is_cached_until_it_expires(
    emu: KubeEmu, make: Make, tmp_path: Path, plugin: Path, api_version: str
) -> None:
    emu.add_user("cloud", "plugin-token-1")
    (tmp_path / "tokens").write_text("plugin-token-1")
    user = exec_user(plugin, tmp_path, api_version, EXPIRES="2999-01-01T00:00:00Z")
    sink = make(env=env_for(kubeconfig(tmp_path / "config", emu.url, user)))
    sink.store(record("alpha"))
    sink.store(record("beta"))
    sink.read()
    assert runs(tmp_path) == 1
    assert {s.headers["authorization"] for s in emu.seen} == {"Bearer plugin-token-1"}


def test_an_expired_plugin_token_is_fetched_again(
    emu: KubeEmu, make: Make, tmp_path: Path, plugin: Path
) -> None:
    emu.add_user("cloud", "plugin-token-1")
    (tmp_path / "tokens").write_text("plugin-token-1")
    user = exec_user(plugin, tmp_path, "client.authentication.k8s.io/v1", EXPIRES="2020-01-01T00:00:00Z")
    sink = make(env=env_for(kubeconfig(tmp_path / "config", emu.url, user)))
    sink.read()
    sink.read()
    assert runs(tmp_path) == 3  # at start, then before each request


def test_a_refused_plugin_token_is_fetched_again_once(
    emu: KubeEmu, make: Make, tmp_path: Path, plugin: Path
) -> None:
    emu.add_user("cloud", "plugin-token-2")
    (tmp_path / "tokens").write_text("plugin-token-1 plugin-token-2")
    user = exec_user(plugin, tmp_path, "client.authentication.k8s.io/v1")
    sink = make(env=env_for(kubeconfig(tmp_path / "config", emu.url, user)))
    assert sink.read().entries == {}
    assert runs(tmp_path) == 2


def test_a_failing_plugin_is_one_line(make: Make, tmp_path: Path, plugin: Path, emu: KubeEmu) -> None:
    user = exec_user(plugin, tmp_path, "client.authentication.k8s.io/v1", FAIL="1")
    with pytest.raises(SinkError) as raised:
        make(env=env_for(kubeconfig(tmp_path / "config", emu.url, user)))
    assert str(raised.value).endswith("exec plugin token-plugin failed with exit code 3")
    assert "\n" not in str(raised.value)


def test_a_missing_plugin_shows_its_install_hint(make: Make, tmp_path: Path, emu: KubeEmu) -> None:
    user = exec_user(tmp_path / "nowhere", tmp_path, "client.authentication.k8s.io/v1")
    with pytest.raises(SinkError, match="not found: install it with: pip install token-plugin"):
        make(env=env_for(kubeconfig(tmp_path / "config", emu.url, user)))


# --- TLS: a private CA, client certificates, the pod's service account ---------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_emu(ca: trustme.CA) -> Iterator[KubeEmu]:
    with KubeEmu(tls=ca) as server:
        server.namespace(NS)
        yield server


def test_a_private_ca_from_data_or_a_file(
    tls_emu: KubeEmu, make: Make, tmp_path: Path, ca: trustme.CA
) -> None:
    make(env=env_for(tls_emu.kubeconfig(tmp_path / "with-data", namespace=NS))).store(record("alpha"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    path = kubeconfig(
        tmp_path / "with-file", tls_emu.url, {"token": tls_emu.token}, **{"certificate-authority": "ca.pem"}
    )
    make(env=env_for(path)).store(record("beta"))
    assert tls_emu.secret(NS, "alpha") is not None and tls_emu.secret(NS, "beta") is not None


def test_an_unknown_ca_is_a_tls_failure(tls_emu: KubeEmu, make: Make, tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", tls_emu.url, {"token": tls_emu.token})
    with pytest.raises(
        SinkError, match=r"TLS failure: the server's TLS certificate is not trusted .*authority"
    ):
        make(env=env_for(path)).read()


def test_insecure_skip_tls_verify_is_honoured_with_a_warning(
    tls_emu: KubeEmu, make: Make, tmp_path: Path
) -> None:
    skip_verify: dict[str, Any] = {"insecure-skip-tls-verify": True}
    path = kubeconfig(tmp_path / "config", tls_emu.url, {"token": tls_emu.token}, **skip_verify)
    sink = make(env=env_for(path))
    assert sink.read().entries == {}
    assert any("insecure-skip-tls-verify is set" in warning for warning in sink.endpoint_warnings)


@pytest.mark.parametrize("as_data", [True, False])
def test_a_client_certificate_identifies_the_user(
    tls_emu: KubeEmu, make: Make, tmp_path: Path, ca: trustme.CA, as_data: bool
) -> None:
    tls_emu.add_user("cert-user", None, Rule.of("get,list", "secrets"))
    issued = ca.issue_cert("cert-user", common_name="cert-user")
    cert, key = issued.cert_chain_pems[0].bytes(), issued.private_key_pem.bytes()
    if as_data:
        user = {
            "client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        }
    else:
        (tmp_path / "cert.pem").write_bytes(cert)
        (tmp_path / "key.pem").write_bytes(key)
        user = {"client-certificate": "cert.pem", "client-key": "key.pem"}
    pem = base64.b64encode(ca.cert_pem.bytes()).decode()
    path = kubeconfig(tmp_path / "config", tls_emu.url, user, **{"certificate-authority-data": pem})
    sink = make(env=env_for(path))

    assert sink.read().entries == {}
    with pytest.raises(SinkError, match='User "cert-user" cannot create resource "secrets"'):
        sink.store(record("alpha"))


def test_in_a_pod_the_service_account_is_used_and_reread(
    tls_emu: KubeEmu, make: Make, tmp_path: Path, ca: trustme.CA
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token-1")
    (account / "namespace").write_text(NS)
    ca.cert_pem.write_to_path(str(account / "ca.crt"))
    tls_emu.add_user("system:serviceaccount:coder-ai-gateway:keysync", "pod-token-1")
    host, port = tls_emu.url.removeprefix("https://").split(":")
    env = {
        "KUBECONFIG": "",
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KEYSYNC_KUBE_SERVICE_ACCOUNT_DIR": str(account),
    }
    sink = make(env=env)
    sink.store(record("alpha"))
    (account / "token").write_text("pod-token-2")
    del tls_emu.tokens["pod-token-1"]
    tls_emu.add_user("system:serviceaccount:coder-ai-gateway:keysync", "pod-token-2")
    sink.store(record("beta"))

    assert sink.namespace == NS
    assert tls_emu.secret(NS, "beta") is not None


# --- no token anywhere it could be read --------------------------------------------------------------------


def test_tokens_never_reach_a_message_or_a_repr(emu: KubeEmu, make: Make, tmp_path: Path) -> None:
    secret_token = "sekrit-Token-0123456789abcdefABCDEF"
    path = kubeconfig(tmp_path / "config", emu.url, {"token": secret_token})
    sink = make(env=env_for(path))
    with pytest.raises(SinkError) as raised:
        sink.read()
    shown = [str(raised.value), repr(raised.value), repr(sink), json.dumps(sink.endpoint_warnings)]
    shown += [repr(vars(sink))]
    assert not any(secret_token in text for text in shown)


def test_exec_plugins_get_the_ca_as_data_even_from_a_file(tmp_path: Path, ca: trustme.CA) -> None:
    from keysync.sinks.kubernetes.kubeconfig import load_access

    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    path = kubeconfig(
        tmp_path / "config", "https://kube.example.com", {"token": "t"}, **{"certificate-authority": "ca.pem"}
    )
    access = load_access(env_for(path), None, None)
    assert base64.b64decode(access.cluster["certificate-authority-data"]) == ca.cert_pem.bytes()
    assert access.cluster["server"] == "https://kube.example.com"
