"""The kubernetes sink against the emulator: the chart's Secret shape, optimistic writes, the
foreign-Secret rail, the access review, and what the API server's errors become."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from keysync.errors import SinkError, SinkRefusedError
from keysync.plan import Action, Plan
from keysync.sinks.kubernetes.shape import SecretShape

from kubeemu import KubeEmu, Rule
from kubeemu.status import too_many_requests
from kubefixtures import NS, URL, Make, emu_fixture, make_fixture, record

__all__ = ["emu_fixture", "make_fixture"]


def refused(call: Callable[..., object], *args: Any) -> str:
    with pytest.raises(SinkError) as raised:
        call(*args)
    return str(raised.value)


# --- the Secret's shape -----------------------------------------------------------------------


def test_store_writes_the_secret_the_chart_mounts(emu: KubeEmu, make: Make) -> None:
    item = record("alpha")
    make(labels={"team": "platform"}).store(item)

    secret = emu.secret(NS, "alpha")
    assert secret is not None
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"key": base64.b64encode(item.key.reveal().encode()).decode()}
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "keysync", "team": "platform"}
    assert secret["metadata"]["annotations"] == {
        "keysync/name": "alpha",
        "keysync/id": item.id,
        "keysync/key-prefix": item.key_prefix,
        "keysync/created-at": item.created_at,
        "keysync/coderd-url": URL,
    }


def test_secret_name_and_data_key_follow_the_settings(emu: KubeEmu, make: Make) -> None:
    item = record("alpha")
    make(secret_name="gateway-{name}-key", data_key="token").store(item)
    assert emu.secret_value(NS, "gateway-alpha-key", "token") == item.key.reveal()


def test_read_reports_each_secret_prefix(emu: KubeEmu, make: Make) -> None:
    items = [record(name) for name in ("alpha", "beta")]
    writer = make()
    for item in items:
        writer.store(item)
    emu.put_secret(NS, "unrelated", {"key": "x"})

    view = make().read()

    assert sorted(view.entries) == ["alpha", "beta"]
    for item in items:
        entry = view.entries[item.name]
        assert (entry.id, entry.key_prefix, entry.coderd_url) == (item.id, item.key_prefix, URL)
        assert entry.secret_prefix == item.key.reveal()[:11]


def test_a_secret_edited_by_hand_reads_as_another_secret(emu: KubeEmu, make: Make) -> None:
    make().store(record("alpha"))
    secret = emu.secret(NS, "alpha")
    assert secret is not None
    emu.put_secret(NS, "alpha", {"key": "sk-edited-by-hand"})
    assert make().read().entries["alpha"].secret_prefix == "sk-edited-b"


def test_another_template_and_another_deployment_are_not_read(emu: KubeEmu, make: Make) -> None:
    make(secret_name="other-{name}").store(record("alpha"))
    make(url="https://other.example.com").store(record("beta", "https://other.example.com"))
    assert make().read().entries == {}


def test_an_invalid_secret_name_template_is_a_settings_error(make: Make) -> None:
    with pytest.raises(ValidationError, match="must be a Kubernetes name"):
        make(secret_name="Gateway_{name}")
    with pytest.raises(SinkError, match="RFC 1123"):  # a sink built from settings not validated
        SecretShape("Gateway_{name}", "key", {})


# --- optimistic writes --------------------------------------------------------------------------


def test_replacing_carries_the_resource_version_read(emu: KubeEmu, make: Make) -> None:
    sink = make()
    sink.store(record("alpha"))
    sink.read()
    newer = record("alpha")
    sink.store(newer)
    assert emu.secret_value(NS, "alpha") == newer.key.reveal()
    sent = [s for s in emu.seen if s.method == "PUT"]
    assert len(sent) == 1


def test_a_secret_changed_between_read_and_store_is_a_conflict(emu: KubeEmu, make: Make) -> None:
    make().store(record("alpha"))
    sink = make()
    sink.read()
    emu.put_secret(NS, "alpha", {"key": "sk-written-by-someone-else"})

    message = refused(sink.store, record("alpha"))

    assert 'Operation cannot be fulfilled on secrets "alpha"' in message
    assert "nothing was overwritten" in message
    assert emu.secret_value(NS, "alpha") == "sk-written-by-someone-else"


def test_a_secret_created_behind_the_sinks_back_is_not_overwritten(emu: KubeEmu, make: Make) -> None:
    sink = make()
    sink.read()
    make().store(record("alpha"))  # another writer, after this sink listed

    message = refused(sink.store, record("alpha"))

    assert 'secrets "alpha" already exists (AlreadyExists)' in message


def test_a_secret_deleted_since_read_is_written_again(emu: KubeEmu, make: Make) -> None:
    make().store(record("alpha"))
    sink = make()
    sink.read()
    emu.delete_secret(NS, "alpha")
    item = record("alpha")
    sink.store(item)
    assert emu.secret_value(NS, "alpha") == item.key.reveal()


def test_remove_deletes_the_secret_and_leaves_others_alone(emu: KubeEmu, make: Make) -> None:
    sink = make()
    sink.store(record("alpha"))
    emu.put_secret(NS, "beta", {"key": "not keysync's"})
    sink.remove("alpha")
    sink.remove("beta")
    sink.remove("gamma")
    assert emu.secret(NS, "alpha") is None
    assert emu.secret(NS, "beta") is not None


# --- the Secret keysync did not write -------------------------------------------------------------


def test_a_foreign_secret_is_refused_for_that_key_only(emu: KubeEmu, make: Make) -> None:
    emu.put_secret(NS, "alpha", {"key": "hand-made"}, labels={"team": "x"})
    sink = make()

    with pytest.raises(SinkRefusedError, match="keysync did not write it"):
        sink.store(record("alpha"))
    sink.store(record("beta"))

    assert emu.secret_value(NS, "alpha") == "hand-made"
    assert emu.secret(NS, "beta") is not None


def test_prepare_names_the_refused_keys_before_any_change(emu: KubeEmu, make: Make) -> None:
    emu.put_secret(NS, "alpha", {"key": "hand-made"})
    actions = [Action("create", "alpha", "missing"), Action("create", "beta", "missing")]
    refusals = make().prepare(actions)
    assert list(refusals) == ["alpha"]
    assert "--force adopts it" in refusals["alpha"]


def test_force_adopts_a_foreign_secret_keeping_its_labels(emu: KubeEmu, make: Make) -> None:
    emu.put_secret(NS, "alpha", {"key": "hand-made"}, labels={"team": "x"})
    item = record("alpha")
    sink = make(force=True)
    assert sink.prepare([Action("create", "alpha", "missing")]) == {}
    sink.store(item)
    secret = emu.secret(NS, "alpha")
    assert secret is not None
    assert secret["metadata"]["labels"] == {"team": "x", "app.kubernetes.io/managed-by": "keysync"}
    assert emu.secret_value(NS, "alpha") == item.key.reveal()


def test_another_deployments_secret_is_refused_even_with_force(emu: KubeEmu, make: Make) -> None:
    other = "https://other.example.com"
    make(url=other).store(record("alpha", other))
    message = refused(make(force=True).store, record("alpha"))
    assert "holds the key 'alpha' of coderd 'https://other.example.com'" in message
    make().remove("alpha")
    assert emu.secret(NS, "alpha") is not None


def test_review_plan_holds_a_foreign_secret_back_and_fails_another_deployments(
    emu: KubeEmu, make: Make
) -> None:
    emu.put_secret(NS, "alpha", {"key": "hand-made"})
    other = "https://other.example.com"
    make(url=other).store(record("beta", other))
    plan = Plan([Action("create", "alpha", "missing"), Action("create", "beta", "missing")])

    reviewed = make().review_plan(plan)
    assert [(g.code, g.names) for g in reviewed.guards] == [("foreign-secret", ("alpha",))]
    assert not reviewed.applyable and reviewed.needs_force  # plan's gate sees what apply would refuse
    (failure,) = reviewed.failures  # nothing lifts it: plan exits 1 before a reviewed plan fails
    assert "holds the key 'beta' of coderd 'https://other.example.com'" in failure

    adopting = make(force=True).review_plan(plan)
    assert adopting.guards == [] and len(adopting.failures) == 1
    assert any(w.endswith("(adopted: --force)") for w in adopting.warnings)


def test_review_plan_warns_of_a_foreign_secret_and_the_rollouts(emu: KubeEmu, make: Make) -> None:
    emu.put_secret(NS, "alpha", {"key": "hand-made"})
    emu.workload(NS, "gw-alpha")
    plan = Plan([Action("create", "alpha", "missing"), Action("create", "beta", "missing")])
    warnings = make(restart=["deployment/gw-{name}"]).review_plan(plan).warnings
    assert any("Secret coder-ai-gateway/alpha exists and keysync did not write it" in w for w in warnings)
    assert "apply rolls deployment/gw-alpha once the Secrets are written" in warnings
    assert f"deployment/gw-beta does not exist in namespace {NS!r}: apply will not roll it" in warnings


# --- access review ----------------------------------------------------------------------------------


def test_the_access_review_names_what_is_missing(emu: KubeEmu, make: Make, tmp_path: Path) -> None:
    emu.add_user("reader", "reader-token", Rule.of("get,list", "secrets", ""))
    kubeconfig = emu.kubeconfig(tmp_path / "reader", token="reader-token", namespace=NS)
    sink = make(env={"KUBECONFIG": str(kubeconfig)}, restart=["deployment/gw-{name}"])
    sink.review_plan(Plan([Action("create", "alpha", "missing")]))

    message = refused(sink.check_ready)

    assert (
        "may not create, update, delete secrets; get, patch deployments.apps (gw-alpha); "
        f"get, create, update, delete leases.coordination.k8s.io ({sink.lease_name}) in namespace {NS!r}"
    ) in message


def test_a_full_grant_passes_the_review(make: Make) -> None:
    make().check_writable()


# --- what the API server's errors become --------------------------------------------------------------


def test_a_missing_namespace_is_named(make: Make) -> None:
    message = refused(make(namespace="nowhere").read)
    assert 'namespaces "nowhere" not found (404 NotFound)' in message


def test_a_refused_token_is_unauthorized_and_never_shown(emu: KubeEmu, make: Make, tmp_path: Path) -> None:
    kubeconfig = emu.kubeconfig(tmp_path / "bogus", token="bogus-token-0123456789ABCDEFxyz", namespace=NS)
    message = refused(make(env={"KUBECONFIG": str(kubeconfig)}).read)
    assert "Unauthorized (401 Unauthorized)" in message
    assert "bogus-token" not in message


def test_a_forbidden_write_says_who_may_not_do_what(emu: KubeEmu, make: Make, tmp_path: Path) -> None:
    emu.add_user("reader", "reader-token", Rule.of("get,list", "secrets", ""))
    kubeconfig = emu.kubeconfig(tmp_path / "reader", token="reader-token", namespace=NS)
    message = refused(make(env={"KUBECONFIG": str(kubeconfig)}).store, record("alpha"))
    assert (
        'secrets is forbidden: User "reader" cannot create resource "secrets" in API group "" in the '
        f'namespace "{NS}" (403 Forbidden)'
    ) in message


def test_too_many_requests_is_waited_out(emu: KubeEmu, make: Make) -> None:
    emu.fail("GET", "/secrets", lambda: too_many_requests(0), times=2)
    assert make().read().entries == {}
    assert [s.method for s in emu.seen].count("GET") == 3


def test_a_secret_over_one_mebibyte_is_invalid(emu: KubeEmu, make: Make) -> None:
    huge = record("alpha")
    object.__setattr__(huge, "key", type(huge.key)("x" * (1 << 20)))
    message = refused(make().store, huge)
    assert 'Secret "alpha" is invalid: data: Too long: must have at most 1048576 bytes' in message
    assert "(422 Invalid)" in message
    assert "xxxxxxxxxxxx" not in message
