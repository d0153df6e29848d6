"""The kubernetes sink against a real cluster, when KEYSYNC_TEST_KUBECONFIG names one.

It writes, reads back, reviews access for and deletes Secrets in a namespace of its own
(KEYSYNC_TEST_NAMESPACE, default keysync-test, which must exist), and takes its Lease.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from keysync.keys import SecretRecord
from keysync.manifest.sinks import KubernetesSinkConfig
from keysync.secret import Secret
from keysync.sinks.base import SinkContext
from keysync.sinks.kubernetes import KubernetesSink

KUBECONFIG = os.environ.get("KEYSYNC_TEST_KUBECONFIG", "")
pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="set KEYSYNC_TEST_KUBECONFIG to a kubeconfig of a test cluster to run these"
)


def test_a_secret_round_trips_through_a_real_cluster(tmp_path: Path) -> None:
    url = f"https://keysync-test-{uuid.uuid4().hex[:8]}.example.com"
    namespace = os.environ.get("KEYSYNC_TEST_NAMESPACE", "keysync-test")
    config = KubernetesSinkConfig(namespace=namespace, secret_name="keysync-test-{name}")
    sink = KubernetesSink(
        config, SinkContext(tmp_path, url, {"KUBECONFIG": KUBECONFIG, "HOME": str(tmp_path)})
    )
    name = f"t{uuid.uuid4().hex[:8]}"
    secret = f"sk{uuid.uuid4().hex}"
    record = SecretRecord(name, Secret(secret), str(uuid.uuid4()), secret[:11], "2026-01-02T03:04:05Z", url)
    try:
        sink.check_writable()
        with sink.lock(None):
            sink.store(record)
            assert sink.read().entries[name].secret_prefix == secret[:11]
            sink.store(record)  # a replace, carrying the resourceVersion read
            sink.remove(name)
        assert name not in sink.read().entries
    finally:
        sink.close()
