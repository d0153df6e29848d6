"""The exceptions keysync raises for expected failures.

    KeysyncError                 every expected failure: one line for the user, exit 1
    ├── ManifestError            the manifest is unreadable or invalid (all problems at once)
    ├── UsageError               flags or arguments that do not fit together
    │   └── HostNotAllowedError  KEYSYNC_ALLOWED_HOSTS does not allow where a credential would go
    ├── UnsafePlanError          a plan needs --force, or touches a protected key
    ├── StalePlanError           a saved plan no longer matches the world
    ├── ApiError                 Coder answered with an error, or not at all
    │   ├── AuthError            401
    │   ├── ForbiddenError       403 for a non-owner
    │   ├── FeatureDisabledError 403 Premium feature
    │   ├── ApiValidationError   400
    │   ├── NotFoundError        404
    │   ├── RateLimitedError     429 that outlasted the wait budget
    │   ├── ServerError          5xx
    │   ├── TransportError       no usable connection
    │   ├── OutcomeUnknownError  a create went out and no answer came back
    │   └── MalformedResponseError  an answer that is not what Coder sends
    ├── SinkError                a sink could not be read, written or locked
    │   ├── LockHeldError        another keysync holds the sink's lock
    │   └── SinkRefusedError     the sink refuses one key (a file it did not write); others go on
    ├── AuditError               the audit trail cannot be written
    └── ApplyFailedError         some actions failed; the report says which

Messages never contain a secret or a token: the types that hold those refuse to print them.
"""

from __future__ import annotations

from collections.abc import Sequence


class KeysyncError(Exception):
    """An expected failure with a one-line message for the user."""


class ManifestError(KeysyncError):
    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UsageError(KeysyncError):
    pass


class HostNotAllowedError(UsageError):
    pass


class UnsafePlanError(KeysyncError):
    pass


class StalePlanError(KeysyncError):
    pass


class ApiError(KeysyncError):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str = "",
        validations: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.message = message
        self.status = status
        self.detail = detail
        self.validations = list(validations)
        super().__init__(self._render())

    def _render(self) -> str:
        text = (
            f"coderd: {self.message}"
            if self.status is None
            else (f"coderd answered {self.status}: {self.message}")
        )
        if self.detail:
            text += f" ({self.detail})"
        for field, detail in self.validations:
            text += f"; {field}: {detail}"
        return text


class AuthError(ApiError):
    pass


class ForbiddenError(ApiError):
    pass


class FeatureDisabledError(ApiError):
    pass


class ApiValidationError(ApiError):
    pass


class NotFoundError(ApiError):
    pass


class RateLimitedError(ApiError):
    pass


class ServerError(ApiError):
    pass


class TransportError(ApiError):
    pass


class OutcomeUnknownError(ApiError):
    pass


class MalformedResponseError(ApiError):
    pass


class SinkError(KeysyncError):
    pass


class LockHeldError(SinkError):
    pass


class SinkRefusedError(SinkError):
    """One key the sink will not take: unlike a failed write, it does not stop the apply."""


class AuditError(KeysyncError):
    pass


class ApplyFailedError(KeysyncError):
    pass
