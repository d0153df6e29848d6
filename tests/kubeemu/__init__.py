"""A Kubernetes API server emulator on loopback, answering as kube-apiserver does for what the
`kubernetes` sink uses: Secrets, workloads and their rollouts, Leases, SelfSubjectAccessReviews,
bearer tokens and client certificates, RBAC-like rules, Status bodies worded as the real ones."""

from kubeemu.rbac import Rule
from kubeemu.server import KubeEmu

__all__ = ["KubeEmu", "Rule"]
