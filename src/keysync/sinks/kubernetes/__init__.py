"""The `kubernetes` sink, imported only when a manifest uses it (keysync --help stays fast)."""

from keysync.sinks.kubernetes.sink import KubernetesSink

__all__ = ["KubernetesSink"]
