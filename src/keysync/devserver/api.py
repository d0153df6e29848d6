"""The request pipeline, in Coder's order: rate limit (below /api/v2), route, token, entitlement, handler."""

from __future__ import annotations

from keysync.devserver import messages
from keysync.devserver.auth import Identity, Principal, Tokens
from keysync.devserver.catchall import catch_all
from keysync.devserver.config import FEATURE_MESSAGES, REQUEST_TYPES, DevServerConfig
from keysync.devserver.endpoints import KeyEndpoints
from keysync.devserver.exchange import Request, Response, json_response, text_response
from keysync.devserver.faults import Faults
from keysync.devserver.gateway import Gateway
from keysync.devserver.ratelimit import RateLimiter, go_duration
from keysync.devserver.routes import Endpoint, Route, resolve, under_api
from keysync.devserver.store import KeyStore

BYPASS_HEADER = "X-Coder-Bypass-Ratelimit"
INJECTED_FAILURE = "injected by the dev server (fail_rate)"
# Go's strconv.ParseBool: the spellings it reads as true.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
# The newest generation answers its own 500s, with no detail.
_NEWEST_FAILURES = {
    (Endpoint.COLLECTION, "GET"): messages.LIST_FAILED,
    (Endpoint.COLLECTION, "POST"): messages.CREATE_FAILED,
    (Endpoint.ITEM, "DELETE"): messages.DELETE_FAILED,
}


class KeysApi:
    def __init__(self, config: DevServerConfig, store: KeyStore, owner_token: str) -> None:
        self._config = config
        self._tokens = Tokens(owner_token, config.member_token)
        self._limiter = RateLimiter(config.rate_limit, config.rate_window) if config.rate_limit else None
        self._faults = Faults(config.fail_rate, config.lose_response_rate, config.seed)
        self._endpoints = KeyEndpoints(store, self._faults, REQUEST_TYPES[config.api], config.seen_field)
        self._gateway = Gateway(store, config.heartbeat_interval)

    def handle(self, request: Request) -> Response:
        route = resolve(request.path, self._config.api)
        if self._faults.fail():
            return self._failure(request, route)
        identity = self._tokens.identify(request)
        quota_headers, refusal = self._rate_limit(request, identity)
        response = refusal or self._route(request, route, identity)
        response.headers.update(quota_headers)
        return response

    def _failure(self, request: Request, route: Route | None) -> Response:
        body = None
        if route is not None and self._config.api == "ai-gateway-keys":
            body = _NEWEST_FAILURES.get((route.endpoint, request.method))
        return json_response(500, body or messages.internal_error(INJECTED_FAILURE))

    def _rate_limit(self, request: Request, identity: Identity) -> tuple[dict[str, str], Response | None]:
        limiter = self._limiter
        if limiter is None or not under_api(request.path):
            return {}, None
        principal = identity.principal
        if principal.is_user and request.header(BYPASS_HEADER).strip() in _GO_TRUE:
            if principal is not Principal.OWNER:
                return {}, text_response(428, messages.BYPASS_REFUSED)
            return limiter.fresh().headers(), None
        # Per user when the token is known, else per client address; always per path.
        caller = principal.value if principal.is_user else f"ip:{request.client}"
        quota = limiter.hit(f"{caller} {request.path}")
        if quota.allowed:
            return quota.headers(), None
        body = messages.rate_limited(limiter.limit, go_duration(limiter.window_ns))
        return quota.headers(), json_response(429, body)

    def _route(self, request: Request, route: Route | None, identity: Identity) -> Response:
        if route is None:
            return json_response(404, messages.ROUTE_NOT_FOUND)
        if request.method not in route.endpoint.methods:
            allow = ", ".join(sorted(route.endpoint.methods))
            return json_response(405, messages.METHOD_NOT_ALLOWED, {"Allow": allow})
        if route.endpoint is Endpoint.SERVE:
            # The gateway authenticates with its key, not with a session token.
            return self._entitlement() or self._gateway.serve(request)
        if route.endpoint is Endpoint.CATCH_ALL:
            return self._entitlement() or catch_all(request, self._tokens)
        if not identity.principal.is_user:
            challenge = {"WWW-Authenticate": _challenge(request)}
            return json_response(401, messages.signed_out(identity.refusal), challenge)
        return self._entitlement() or self._keys(request, route, identity.principal is Principal.OWNER)

    def _entitlement(self) -> Response | None:
        if not self._config.feature_disabled:
            return None
        message = FEATURE_MESSAGES[self._config.api]
        return json_response(403, messages.feature_disabled(message))

    def _keys(self, request: Request, route: Route, owner: bool) -> Response:
        if route.endpoint is Endpoint.ITEM:
            return self._endpoints.delete(route.item, owner)
        if request.method == "POST":
            return self._endpoints.create(request.body, owner)
        return self._endpoints.list(owner)


def _challenge(request: Request) -> str:
    """Coder's RFC 6750 challenge, naming its protected-resource metadata at the access URL."""
    metadata = f"http://{request.header('Host')}/.well-known/oauth-protected-resource"
    return messages.INVALID_TOKEN_CHALLENGE.format(metadata=f'"{metadata}"')
