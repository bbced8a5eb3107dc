"""The session-wide rate cap: no window over the rate, one cut per 429 episode, fast recovery."""

from __future__ import annotations

import pytest

from kling_async._ratelimit import RateLimiter


def _sends(limiter: RateLimiter, until: float, start: float = 0.0) -> list[float]:
    sent, now = [], start
    while now < until:
        wait = limiter.reserve(now)
        if wait == 0:
            sent.append(now)
        else:
            now += max(wait, 0.001)
    return sent


@pytest.mark.parametrize("rate", [1.0, 7.0, 10.0, 250.0])
def test_rate_limiter_never_exceeds_rate_in_any_window(rate):
    """In any window of one second (plus margin), no more than `rate` sends are allowed."""
    limiter = RateLimiter(rate)
    sent = _sends(limiter, 10.0)
    assert len(sent) >= rate * 10 * 0.9
    window = 1.0 + limiter.margin
    j = 0
    for i, t in enumerate(sent):
        while sent[j] <= t - window:
            j += 1
        assert i - j + 1 <= max(1, int(rate))


def test_a_429_cuts_the_rate_once_per_episode():
    """Every 429 until a request sent after the cut succeeds belongs to one episode."""
    limiter = RateLimiter(20.0)
    assert limiter.congested(now=1.5)
    assert limiter.rate(1.5) == pytest.approx(14.0)
    for now in (1.6, 1.7, 3.0):  # answers in flight, or a storm that goes on
        assert not limiter.congested(now=now)
    limiter.relieved(sent=1.4)  # sent before the cut: says nothing about the new rate
    assert not limiter.congested(now=3.1)
    limiter.relieved(sent=3.2)
    assert limiter.congested(now=3.3)  # a new episode


def test_the_rate_recovers_in_seconds_not_minutes():
    """After a 2 s storm of 429s the rate is back to the cap within a few seconds."""
    limiter = RateLimiter(20.0)
    for step in range(40):
        limiter.congested(now=step * 0.05)
    assert limiter.rate(0.0) == pytest.approx(14.0)
    assert limiter.rate(3.0) == 20.0
    sent = _sends(limiter, 13.0, start=3.0)
    assert len(sent) >= 0.9 * 20 * 10


def test_the_rate_never_drops_to_nothing():
    """However many episodes, the rate stays above one request per ten seconds."""
    limiter = RateLimiter(5.0)
    for i in range(100):
        limiter.congested(now=float(i))
        limiter.relieved(sent=i + 0.5)
    assert limiter.rate(99.0) >= 0.1
