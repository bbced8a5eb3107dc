"""The session-wide rate cap: no window over the rate, one cut per 429 episode, fast recovery,
and sends stamped when they leave, not when they were granted."""

from __future__ import annotations

import random

import pytest

from kling_async._ratelimit import WINDOW, RateLimiter, StaleGrant, Ticket


def _sends(limiter: RateLimiter, until: float, start: float = 0.0) -> list[float]:
    sent, now = [], start
    while now < until:
        grant = limiter.reserve(now)
        if isinstance(grant, Ticket):
            grant.send(now)
            sent.append(now)
        else:
            now += max(grant, 0.001)
    return sent


def _most_in_any_window(stamps: list[float], window: float) -> int:
    """The most stamps in any half-open window of ``window`` seconds."""
    stamps = sorted(stamps)
    most, j = 0, 0
    for i, t in enumerate(stamps):
        while stamps[j] <= t - window:
            j += 1
        most = max(most, i - j + 1)
    return most


@pytest.mark.parametrize("rate", [1.0, 7.0, 10.0, 250.0])
def test_rate_limiter_never_exceeds_rate_in_any_window(rate):
    """In any window of one second plus the margin, no more than `rate` sends are allowed."""
    limiter = RateLimiter(rate)
    sent = _sends(limiter, 10.0)
    assert len(sent) >= rate * 10 * 0.9
    assert _most_in_any_window(sent, WINDOW) <= max(1, int(rate))


@pytest.mark.parametrize("seed", range(5))
def test_sends_are_counted_when_they_leave_however_late(seed):
    """Grants sent after random delays (a busy event loop, a wait for a connection) are
    stamped when they leave: no window of the real send times holds more than the rate,
    and a grant never sent gives its place back."""
    rng = random.Random(seed)
    rate, limiter = 50.0, RateLimiter(50.0)
    held: list[tuple[float, Ticket]] = []  # (when it leaves, ticket)
    sent: list[float] = []
    now = 0.0
    while now < 20.0:
        for leaves, ticket in [h for h in held if h[0] <= now]:
            held.remove((leaves, ticket))
            if rng.random() < 0.1:
                ticket.cancel()
            else:
                ticket.send(now)
                sent.append(now)
        grant = limiter.reserve(now)
        if isinstance(grant, Ticket):  # leaves at once, or after a stall of up to 0.5 s
            held.append((now + rng.choice([0.0, 0.0, rng.uniform(0, 0.5)]), grant))
        else:
            now += min(grant, 0.01)
        now += rng.uniform(0, 0.003)
    assert _most_in_any_window(sent, WINDOW) <= rate
    assert len(sent) >= 0.8 * rate * 20 / WINDOW  # given-back places were used again


def test_a_grant_past_its_deadline_is_renewed_or_not_sent():
    """A ticket with a deadline is sent before it, renewed after it, or refused (StaleGrant)
    with its place given back."""
    limiter = RateLimiter(1.0)
    ticket = limiter.reserve(0.0)
    assert isinstance(ticket, Ticket)
    ticket.expires, ticket.renew = 0.05, lambda now: None
    with pytest.raises(StaleGrant):
        ticket.send(0.06)
    assert ticket.sent_at is None
    again = limiter.reserve(1.0)  # its place was given back: the window is empty
    assert isinstance(again, Ticket)
    again.expires, again.renew = 1.05, lambda now: now + 0.05
    again.send(1.2)
    assert again.sent_at == 1.2
    assert limiter.reserve(1.3) == pytest.approx(1.2 + WINDOW - 1.3)


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
