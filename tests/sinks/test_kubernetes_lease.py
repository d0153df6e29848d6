"""The sink's lock is a Lease, taken, renewed, expired and released as client-go's leader
election does, against the emulator's Leases (409 on a stale resourceVersion, AlreadyExists)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from keysync.errors import LockHeldError, SinkError
from keysync.sinks.kubernetes.lease import Lease, Renewer, held, identity

from kubeemu import KubeEmu
from kubeemu.server import LEASES
from kubeemu.status import StatusError
from kubefixtures import NS, Make, emu_fixture, make_fixture, record, renewals_fail_fast_then_hang

__all__ = ["emu_fixture", "make_fixture"]


def test_the_lock_is_a_lease_taken_and_released(emu: KubeEmu, make: Make) -> None:
    sink = make()
    with sink.lock(None):
        lease = emu.lease(NS, sink.lease_name)
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == identity()
        assert lease["spec"]["leaseDurationSeconds"] == 15
        assert lease["spec"]["acquireTime"].endswith("Z") and "." in lease["spec"]["acquireTime"]
    released = emu.lease(NS, sink.lease_name)
    assert released is not None
    assert released["spec"].get("holderIdentity") is None


def test_the_lease_name_is_per_deployment_and_template(make: Make) -> None:
    names = {
        make().lease_name,
        make(url="https://other").lease_name,
        make(secret_name="gw-{name}").lease_name,
    }
    assert len(names) == 3
    assert all(name.startswith("keysync-") and len(name) == 18 for name in names)


def test_a_second_holder_fails_at_once_naming_the_first(emu: KubeEmu, make: Make) -> None:
    first, second = make().lease(), make().lease()
    second.identity = "4242@other-host"
    with held(first, None), pytest.raises(LockHeldError) as raised, held(second, None):
        pass
    message = str(raised.value)
    assert f"Lease {NS}/{first.name}, is held by {identity()} since 20" in message
    assert "pass --lock-timeout DURATION to wait" in message


def test_lock_timeout_waits_for_the_holder_to_release(emu: KubeEmu, make: Make) -> None:
    first, second = make().lease(1.0), make().lease(1.0)
    second.identity = "4242@other-host"
    taken = threading.Event()

    def hold_briefly() -> None:
        with held(first, None):
            taken.set()
            time.sleep(0.3)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    taken.wait(5)
    with held(second, 5):
        lease = emu.lease(NS, first.name)
        assert lease is not None and lease["spec"]["holderIdentity"] == "4242@other-host"
        assert lease["spec"]["leaseTransitions"] == 1
    holder.join()


def test_an_expired_lease_is_taken_over_once_seen_unrenewed(emu: KubeEmu, make: Make) -> None:
    dead = make().lease(1.0)
    dead.identity = "1@gone"
    assert dead.try_acquire()  # the holder then dies without releasing
    candidate = make().lease(1.0)
    assert not candidate.try_acquire()  # first sight: its expiry is timed from now
    time.sleep(1.1)
    assert candidate.try_acquire()
    lease = emu.lease(NS, candidate.name)
    assert lease is not None and lease["spec"]["holderIdentity"] == identity()


def test_a_stale_resource_version_loses_the_race(emu: KubeEmu, make: Make) -> None:
    first, second = make().lease(), make().lease()
    second.identity = "7@racer"
    assert first.try_acquire()
    first.release()
    with emu.paused() as gate:
        results: list[bool] = []
        racers = [
            threading.Thread(target=lambda c=c: results.append(c.try_acquire())) for c in (first, second)
        ]
        for racer in racers:
            racer.start()
        time.sleep(0.2)
        gate.set()
        for racer in racers:
            racer.join()
    assert sorted(results) == [False, True]
    conflicts = [s for s in emu.seen if s.method == "PUT" and "leases" in s.path]
    assert len(conflicts) >= 3  # the release, and both racers' updates


def test_a_long_hold_is_renewed(emu: KubeEmu, make: Make) -> None:
    lease = make().lease(0.9)
    with held(lease, None) as renewer:
        first = emu.lease(NS, lease.name)
        time.sleep(0.8)
        later = emu.lease(NS, lease.name)
        assert not renewer.lost.is_set()
    assert first is not None and later is not None
    assert later["spec"]["renewTime"] > first["spec"]["renewTime"]
    assert later["spec"]["acquireTime"] == first["spec"]["acquireTime"]


def test_a_holder_that_cannot_renew_knows_before_its_lease_expires(emu: KubeEmu, make: Make) -> None:
    lease = make().lease(0.9)
    assert lease.try_acquire()
    lost_at: list[float] = []
    renewer = Renewer(lease, lambda: lost_at.append(time.monotonic()))
    renewer.start()
    try:
        emu.fail("GET", "/leases/", lambda: StatusError(503, "ServiceUnavailable", "etcd is down"), times=100)
        assert renewer.lost.wait(3)
    finally:
        renewer.stop()
    assert lost_at[0] < lease.renewed_at + 0.9  # it knew before anyone could take the lease over


def test_create_racing_create_is_already_exists(emu: KubeEmu, make: Make) -> None:
    first = make().lease()
    other: Lease = make().lease()
    other.identity = "8@racer"
    assert other.try_acquire()
    emu.store.delete(LEASES, NS, first.name)
    with emu.paused() as gate:
        results: list[bool] = []
        racers = [
            threading.Thread(target=lambda c=c: results.append(c.try_acquire())) for c in (first, other)
        ]
        for racer in racers:
            racer.start()
        time.sleep(0.2)
        gate.set()
        for racer in racers:
            racer.join()
    assert sorted(results) == [False, True]


def test_a_renewal_stuck_on_the_network_still_loses_the_lease_in_time(emu: KubeEmu, make: Make) -> None:
    lease = make().lease(3.0)
    assert lease.try_acquire()
    lost_at: list[datetime] = []
    renewer = Renewer(lease, lambda: lost_at.append(datetime.now(UTC)))
    with emu.paused():  # the API server stops answering
        renewer.start()
        assert renewer.lost.wait(6)
    renewer.stop()
    assert lease.last is not None
    renewed = datetime.strptime(lease.last.renewed, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert lost_at[0] < renewed + timedelta(seconds=3.0)


def test_writes_stop_once_the_apply_lock_is_lost(emu: KubeEmu, make: Make) -> None:
    sink = make()
    sink.lock_duration = 1.5
    with sink.lock(None) as renewer:
        sink.store(record("alpha"))
        emu.fail(
            "GET", "/leases/", lambda: StatusError(503, "ServiceUnavailable", "etcd is down"), times=1000
        )
        assert renewer.lost.wait(3)  # type: ignore[attr-defined]
        with pytest.raises(SinkError, match=r"the sink's lock, Lease .* was lost"):
            sink.store(record("beta"))
    assert emu.secret(NS, "beta") is None


def failed_renewals(caplog: pytest.LogCaptureFixture) -> int:
    return sum("cannot renew the Lease" in r.getMessage() for r in list(caplog.records))


def test_a_renewal_that_fails_fast_then_hangs_loses_the_lease_while_still_pending(
    emu: KubeEmu, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "keysync")
    leader, standby = make().lease(2.4), make().lease(2.4)
    standby.identity = "4242@standby-host"
    assert leader.try_acquire()
    assert not standby.try_acquire()  # it watches the leader's record from now on
    stuck = renewals_fail_fast_then_hang(emu)
    events: list[str] = []
    renewer = Renewer(
        leader, lambda: events.append(f"lost: {len(stuck.held)} held, {failed_renewals(caplog)} failed")
    )
    renewer.start()
    try:
        while not standby.try_acquire():
            time.sleep(0.05)
        events.append("the standby took over")
        taken = emu.lease(NS, leader.name)
    finally:
        stuck.gate.set()
        renewer.stop()
    # The leader gave up while its second renewal was held and had not yet failed for it.
    assert events == ["lost: 1 held, 1 failed", "the standby took over"]
    assert taken is not None and taken["spec"]["holderIdentity"] == "4242@standby-host"


def test_an_apply_whose_renewal_hangs_stops_writing_while_it_is_pending(
    emu: KubeEmu, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "keysync")
    sink = make()
    sink.lock_duration = 2.4
    with sink.lock(None) as renewer:
        sink.store(record("alpha"))
        stuck = renewals_fail_fast_then_hang(emu)
        assert renewer.lost.wait(5)  # type: ignore[attr-defined]
        pending = (len(stuck.held), failed_renewals(caplog))
        with pytest.raises(SinkError, match=r"the sink's lock, Lease .* was lost"):
            sink.store(record("beta"))
        stuck.gate.set()
    assert pending == (1, 1)
    assert emu.secret(NS, "alpha") is not None and emu.secret(NS, "beta") is None
