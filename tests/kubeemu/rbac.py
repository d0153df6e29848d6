"""RBAC as far as the emulator needs it: a user's rules, checked per verb, resource and name."""

from __future__ import annotations

from dataclasses import dataclass

ALL = frozenset({"*"})
EVERY_VERB = ("get", "list", "watch", "create", "update", "patch", "delete")


@dataclass(frozen=True)
class Rule:
    """Like a Role's rule: verbs on resources of an API group, optionally only some names.

    As in RBAC, a rule limited by names never allows `create` or `list` (no name is known then).
    """

    verbs: frozenset[str] = ALL
    resources: frozenset[str] = ALL
    group: str = "*"
    names: frozenset[str] = frozenset()
    namespace: str = "*"

    @classmethod
    def of(cls, verbs: str, resources: str, group: str = "*", names: str = "", namespace: str = "*") -> Rule:
        """Rule.of("get,update", "secrets", "", names="gw") : comma-separated lists."""
        return cls(_split(verbs), _split(resources), group, _split(names), namespace)

    def allows(self, verb: str, group: str, resource: str, name: str, namespace: str) -> bool:
        return (
            _within(verb, self.verbs)
            and _within(resource, self.resources)
            and (self.group == "*" or self.group == group)
            and (self.namespace == "*" or self.namespace == namespace)
            and (not self.names or name in self.names)
        )


def _split(text: str) -> frozenset[str]:
    return frozenset(part for part in text.split(",") if part)


def _within(value: str, allowed: frozenset[str]) -> bool:
    return "*" in allowed or value in allowed


class Authorizer:
    def __init__(self) -> None:
        self.rules: dict[str, list[Rule]] = {}

    def grant(self, user: str, *rules: Rule) -> None:
        self.rules.setdefault(user, []).extend(rules)

    def allow_all(self, user: str) -> None:
        self.rules[user] = [Rule()]

    def only(self, user: str, *rules: Rule) -> None:
        self.rules[user] = list(rules)

    def allows(self, user: str, verb: str, group: str, resource: str, name: str, namespace: str) -> bool:
        return any(rule.allows(verb, group, resource, name, namespace) for rule in self.rules.get(user, []))
