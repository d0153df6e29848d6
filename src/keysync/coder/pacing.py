"""Pacing requests to Coder's rate limit, so that a large apply meets it rarely.

Coder's limiter (go-chi/httprate) counts requests per user and path in windows of length W
aligned on the UTC clock, and admits one while `round(prev * (W - elapsed) / W + curr) + 1 <=
limit`: the previous window's count fades out linearly, so budget comes back gradually, not all
at once when a window ends. Every answer says `X-RateLimit-Limit`, `-Remaining` and `-Reset`
(the current window's end); a 429 adds `Retry-After`, always W.

Each path gets a model of that limiter. A request reserves the earliest moment the model admits
it and is counted at once, so parallel workers queue up instead of racing; answers correct the
model where the server counts more than it knows of (another client, an earlier run). Until W
is shown (by a 429's Retry-After, or by the ends of successive windows), the model knows only
the current window: the first request after its end goes alone, as a probe, and the others wait
for its answer.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

MAX_WINDOW = 3600.0
# Go's Time.Truncate counts windows from Go's zero time (year 1), not from the Unix epoch.
_GO_ZERO = 62_135_596_800.0
_PROVABLE_STEP = 60  # Coder's window; a longer gap between windows' ends may span several
_LOOKAHEAD = 4  # windows searched for an admitting moment before giving up on the model
_PROBE_PATIENCE = 5.0  # seconds others wait for a probe's answer, once it is sent, before probing


@dataclass(frozen=True)
class Quota:
    """What one answer says about the rate limit."""

    limit: int
    remaining: int
    reset: float

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Quota | None:
        try:
            quota = cls(
                int(headers["x-ratelimit-limit"]),
                int(headers["x-ratelimit-remaining"]),
                float(headers["x-ratelimit-reset"]),
            )
        except (KeyError, ValueError):
            return None
        sane = quota.limit > 0 and quota.remaining <= quota.limit and math.isfinite(quota.reset)
        return quota if sane else None


@dataclass
class _Model:
    limit: int
    reset: float  # the latest window end the server told
    window: float = 0.0  # W once shown; 0 while unknown
    counts: dict[int, float] = field(default_factory=dict)  # window number -> requests counted
    last: float = 0.0  # the latest reserved moment: reservations never go back in time
    step: int = 0  # gcd of the gaps between the windows' ends seen
    probing: float = 0.0  # when the probe in flight is sent; 0 for none
    prober: int = 0  # the thread that sends it

    def index(self, moment: float) -> int:
        if not self.window:  # 0: the window ending at `reset`, 1: anything after it
            return 0 if moment < self.reset else 1
        return math.floor((moment + _GO_ZERO) / self.window)

    def start(self, k: int) -> float:
        return k * self.window - _GO_ZERO

    def rate(self, moment: float) -> float:
        k = self.index(moment)
        if not self.window:
            return self.counts.get(k, 0.0)
        faded = (moment - self.start(k)) / self.window
        return self.counts.get(k - 1, 0.0) * (1 - faded) + self.counts.get(k, 0.0)

    def earliest(self, moment: float, margin: float) -> float:
        """The first moment from `moment` on at which the limiter admits one more request."""
        for _ in range(_LOOKAHEAD):
            if self.rate(moment) < self.limit - 0.5:  # Go's math.Round: x.5 rounds up
                return moment
            if not self.window:
                return max(moment, self.reset + margin)
            k = self.index(moment)
            prev, curr = self.counts.get(k - 1, 0.0), self.counts.get(k, 0.0)
            room = self.limit - 0.5 - curr
            start, end = self.start(k), self.start(k + 1)
            faded = start + self.window * (1 - room / prev) + margin if room > 0 and prev > 0 else end
            if faded < end:
                return max(moment, faded)
            moment = end + margin
        return moment

    def count(self, moment: float, delta: float) -> None:
        k = self.index(moment)
        self.counts[k] = max(0.0, self.counts.get(k, 0.0) + delta)
        if self.window:
            for old in [n for n in self.counts if n < k - 1]:
                del self.counts[old]

    def learn_window(self, window: float) -> None:
        """W is shown: the counts of the windows around `reset` are kept, under the new W."""
        if window == self.window:
            return
        k = self._current()
        prev, curr, ahead = (self.counts.get(k + n, 0.0) for n in (-1, 0, 1))
        self.window = window
        k = self._current()
        self.counts = {k - 1: prev, k: curr, k + 1: ahead}

    def see_reset(self, reset: float) -> None:
        """A window's end as the server says it: the model moves on with the server."""
        if reset <= self.reset:
            return
        gap = round(reset - self.reset)
        self.step = math.gcd(self.step, gap) if gap > 0 else self.step
        if not self.window:  # the window that ended becomes the previous one
            one_step = self.step and gap == self.step
            self.counts = {-1: self.counts.get(0, 0.0) if one_step else 0.0, 0: self.counts.get(1, 0.0)}
        self.reset = reset
        if 0 < self.step <= _PROVABLE_STEP and self.step != self.window:
            self.learn_window(float(self.step))

    def _current(self) -> int:
        """The number of the window ending at `reset`."""
        return 0 if not self.window else self.index(self.reset - self.window / 2)


class Pacer:
    """Per-path models of Coder's limiter; thread-safe. `clock` is Unix time (Coder's windows
    are aligned on it)."""

    def __init__(self, clock: Callable[[], float], enabled: bool = True) -> None:
        self._clock = clock
        self._enabled = enabled
        self._changed = threading.Condition()
        self._models: dict[str, _Model] = {}
        self._not_before: dict[str, float] = {}
        self._reserved = threading.local()  # the moment this thread's request was counted at
        self._blind: dict[str, int] = {}  # requests sent before the first answer made a model

    def reserve(self, path: str) -> float:
        """Seconds to wait before sending a request on `path`; the request is counted."""
        if not self._enabled:
            return 0.0
        with self._changed:
            while True:
                now = self._clock()
                moment = max(now, self._not_before.get(path, 0.0))
                model = self._models.get(path)
                if model is None:
                    self._reserved.moment = moment
                    self._blind[path] = self._blind.get(path, 0) + 1
                    return moment - now
                moment = model.earliest(max(moment, model.last), _margin(model.window))
                beyond = not model.window and moment >= model.reset
                patience = model.probing + _PROBE_PATIENCE - now
                if beyond and model.probing and patience > 0:
                    self._changed.wait(timeout=patience)  # for the probe's answer
                    continue
                if beyond:
                    model.probing, model.prober = moment, threading.get_ident()
                model.count(moment, 1)
                model.last = self._reserved.moment = moment
                return moment - now

    def observe(self, path: str, headers: Mapping[str, str], limited: bool) -> None:
        """Corrects the model from an answer's headers; `limited`: it was a 429."""
        quota = Quota.of(headers) if self._enabled else None
        if quota is None:
            return
        with self._changed:
            now = self._clock()
            if not -MAX_WINDOW < quota.reset - now <= MAX_WINDOW:
                return  # a window's end that far off is no limiter keysync can model
            model = self._models.get(path)
            if model is None:
                model = self._models[path] = _Model(quota.limit, quota.reset, last=now)
                model.count(now, max(1, self._blind.pop(path, 0)))  # whatever went out so far
                self._reserved.moment = now
            model.limit = quota.limit
            model.see_reset(quota.reset)
            if limited:  # refused, so not counted
                model.count(getattr(self._reserved, "moment", now), -1)
                _learn_from_retry_after(model, headers.get("retry-after", ""))
            # The answer counts the window ending at its reset, which may be over by now.
            at = min(now, quota.reset - 1e-3)
            excess = (quota.limit - quota.remaining) - model.rate(at)
            if excess > 0.5:  # counted by someone else; assume it fades no sooner than the window ends
                model.count(at, excess)
            if model.prober == threading.get_ident():  # the probe's answer: the others may go on
                model.probing = 0.0
            self._changed.notify_all()

    def hold_off(self, path: str, seconds: float) -> None:
        """No request on `path` for `seconds` (a 429 that said so, without quota headers)."""
        with self._changed:
            until = self._clock() + seconds
            self._not_before[path] = max(self._not_before.get(path, 0.0), until)


def _learn_from_retry_after(model: _Model, retry_after: str) -> None:
    try:
        seconds = float(retry_after)
    except ValueError:
        return
    if 1 <= seconds <= MAX_WINDOW:  # Coder's Retry-After is always the window's length
        model.learn_window(seconds)


def _margin(window: float) -> float:
    """Slack for the clocks of keysync and Coder, which need not agree to the millisecond."""
    return 0.02 + window / 200
