"""Injected failures: the dice for --fail-rate and --lose-response-rate."""

from __future__ import annotations

import random
import threading


class Faults:
    def __init__(self, fail_rate: float, lose_rate: float, seed: int | None) -> None:
        self._fail_rate = fail_rate
        self._lose_rate = lose_rate
        # Separate from the key generator, so a seed gives the same ids whatever fails.
        self._rng = random.Random(f"keysync-devserver-faults:{seed}" if seed is not None else None)
        self._lock = threading.Lock()

    def fail(self) -> bool:
        """Should this request be answered with a 500?"""
        return self._roll(self._fail_rate)

    def lose(self) -> bool:
        """Should this committed create go unanswered?"""
        return self._roll(self._lose_rate)

    def _roll(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        with self._lock:
            return self._rng.random() < rate
