"""What a failed certificate check means, said so that the hint fits the cause."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

# OpenSSL's X509_V_ERR_* codes that a private CA (--ca-cert, ca_cert) cannot fix.
_EXPIRED, _NOT_YET_VALID = 10, 9
_NAME_MISMATCH = (62, 64)  # host name, IP address


@dataclass(frozen=True)
class CertificateProblem:
    reason: str  # e.g. "the server's TLS certificate has expired"
    untrusted: bool  # True when trusting another CA is the fix


def caused_by_tls(exc: BaseException) -> bool:
    """Whether a TLS error lies anywhere down the chain of causes of a transport failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def certificate_problem(exc: BaseException) -> CertificateProblem | None:
    """The certificate check that failed somewhere in exc's chain, or None if none did."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return _describe(seen)
        if isinstance(seen, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return CertificateProblem("the server's TLS certificate is not trusted", True)
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(error: ssl.SSLCertVerificationError) -> CertificateProblem:
    said = " ".join(str(error.verify_message or error.reason or "").split())[:120]
    if error.verify_code == _EXPIRED:
        return CertificateProblem(f"the server's TLS certificate has expired ({said})", False)
    if error.verify_code == _NOT_YET_VALID:
        return CertificateProblem(
            f"the server's TLS certificate is not valid yet ({said}); check this machine's clock", False
        )
    if error.verify_code in _NAME_MISMATCH or "mismatch" in said.lower():
        return CertificateProblem(f"the server's TLS certificate is for another host name ({said})", False)
    return CertificateProblem(f"the server's TLS certificate is not trusted ({said})", True)
