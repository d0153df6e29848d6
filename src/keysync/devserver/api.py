"""The request pipeline, in Coder's order: route, rate limit, token, entitlement, handler."""

from __future__ import annotations

from keysync.devserver import messages
from keysync.devserver.auth import Principal, Tokens
from keysync.devserver.config import FEATURE_MESSAGES, REQUEST_TYPES, DevServerConfig
from keysync.devserver.endpoints import KeyEndpoints
from keysync.devserver.exchange import Request, Response, json_response
from keysync.devserver.faults import Faults
from keysync.devserver.ratelimit import RateLimiter
from keysync.devserver.routes import Endpoint, Route, resolve
from keysync.devserver.store import KeyStore

BYPASS_HEADER = "X-Coder-Bypass-Ratelimit"
INJECTED_FAILURE = "injected by the dev server (fail_rate)"
# Go's strconv.ParseBool: the spellings it reads as true.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


class KeysApi:
    def __init__(self, config: DevServerConfig, store: KeyStore, owner_token: str) -> None:
        self._config = config
        self._tokens = Tokens(owner_token, config.member_token)
        self._limiter = RateLimiter(config.rate_limit) if config.rate_limit else None
        self._faults = Faults(config.fail_rate, config.lose_response_rate, config.seed)
        self._endpoints = KeyEndpoints(store, self._faults, REQUEST_TYPES[config.api])

    def handle(self, request: Request) -> Response:
        if self._faults.fail():
            return json_response(500, messages.internal_error(INJECTED_FAILURE))
        route = resolve(request.path, self._config.api)
        if route is None:
            return json_response(404, messages.ROUTE_NOT_FOUND)
        if request.method not in route.endpoint.methods:
            allow = ", ".join(sorted(route.endpoint.methods))
            return json_response(405, messages.METHOD_NOT_ALLOWED, {"Allow": allow})
        principal = self._tokens.identify(request)
        quota_headers, refusal = self._rate_limit(request, principal)
        response = refusal or self._dispatch(request, route, principal)
        response.headers.update(quota_headers)
        return response

    def _rate_limit(self, request: Request, principal: Principal) -> tuple[dict[str, str], Response | None]:
        limiter = self._limiter
        if limiter is None:
            return {}, None
        now = limiter.now()
        if principal.is_user and request.header(BYPASS_HEADER).strip() in _GO_TRUE:
            if principal is not Principal.OWNER:
                return {}, json_response(428, messages.BYPASS_REFUSED)
            return limiter.fresh().headers(now), None
        # Per user when the token is known, else per client address; always per path.
        caller = principal.value if principal.is_user else f"ip:{request.client}"
        quota = limiter.hit(f"{caller} {request.path}")
        if quota.allowed:
            return quota.headers(now), None
        return quota.headers(now), json_response(429, messages.rate_limited(limiter.limit))

    def _dispatch(self, request: Request, route: Route, principal: Principal) -> Response:
        if route.endpoint is Endpoint.SERVE:
            # The gateway authenticates with its key, not with a session token.
            return self._entitlement() or self._endpoints.serve(request)
        if not principal.is_user:
            detail = messages.NO_TOKEN_DETAIL
            if principal is Principal.INVALID:
                detail = messages.INVALID_TOKEN_DETAIL
            return json_response(401, messages.signed_out(detail))
        if route.endpoint is Endpoint.LEGACY_PROXY:
            return json_response(502, messages.PROXY_FAILED)
        return self._entitlement() or self._keys(request, route, principal is Principal.OWNER)

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
