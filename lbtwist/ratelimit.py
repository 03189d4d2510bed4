# -*- test-case-name: tests.test_ratelimit -*-
"""
Rate limiting: a token bucket per key (the client's address, or the value
of a request header), in a table of bounded size.

Each key has a bucket of C{burst} tokens, refilled at C{rate} tokens per
second; a request takes one token, and a request that finds less than one
is refused, with the seconds until the next token.  A key not seen for
C{burst / rate} seconds has a full bucket again, exactly as an unknown key
has, so it is forgotten: the table is kept in least-recently-used order and
each request forgets at most two such keys at its front (no periodic scan).
When the table holds C{maxKeys} keys, a new key makes the least recently
used one be forgotten, which then starts again with a full bucket.

Nothing here uses a reactor: the time is always passed in.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from hashlib import blake2b

from attrs import frozen
from twisted.logger import Logger

from lbtwist._http.headers import ForwardingPolicy
from lbtwist.config import RateLimitConfig
from lbtwist.hashkey import KeyedRequest, keyReader

__all__ = ["RateLimit", "Refusal", "TokenBuckets", "retryAfter"]

_log = Logger()

_LONGEST_KEY = 64
"""Header values longer than this are kept as their 16-byte digest."""


class TokenBuckets:
    """
    A token bucket per key, at most C{maxKeys} of them.

    @ivar rate: Tokens added per second.
    @ivar burst: A bucket's size: the requests a key may make at once.
    @ivar maxKeys: The most keys kept.
    @ivar evictions: How many keys were forgotten because the table was full.
    @ivar onFull: Called once, when the table is full for the first time
        and a key is forgotten.
    """

    __slots__ = (
        "rate",
        "burst",
        "maxKeys",
        "evictions",
        "onFull",
        "_idle",
        "_buckets",
    )

    def __init__(
        self,
        rate: float,
        burst: int,
        maxKeys: int,
        onFull: Callable[[], None] | None = None,
    ) -> None:
        """
        @param rate: Tokens added per second, greater than 0.
        @param burst: A bucket's size, at least 1.
        @param maxKeys: The most keys kept, at least 1.
        @param onFull: See L{TokenBuckets.onFull}.
        """
        self.rate = rate
        self.burst = burst
        self.maxKeys = maxKeys
        self.evictions = 0
        self.onFull = onFull
        # After this many seconds without a request, any bucket is full.
        self._idle = burst / rate
        # key -> (tokens, time of the last request), least recently used first.
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        """
        @return: How many keys are kept.
        """
        return len(self._buckets)

    def take(self, key: Hashable, now: float) -> float:
        """
        Take a token from C{key}'s bucket for one request.

        @param key: The request's key.
        @param now: The current time, in seconds.
        @return: C{0.0} if the request may proceed (a token was taken), else
            the seconds until the bucket holds one token (nothing was taken).
        """
        buckets = self._buckets
        entry = buckets.pop(key, None)
        if entry is None:
            tokens = float(self.burst)
            if len(buckets) >= self.maxKeys:
                buckets.popitem(last=False)
                self.evictions += 1
                if self.evictions == 1 and self.onFull is not None:
                    self.onFull()
        else:
            tokens, last = entry
            elapsed = now - last
            if elapsed > 0:
                tokens = min(self.burst, tokens + elapsed * self.rate)
        # Forget up to two keys whose buckets are full again: more than
        # arrive (one a request), so stale keys never pile up.
        for _ in range(2):
            if not buckets:
                break
            oldest = next(iter(buckets))
            if now - buckets[oldest][1] < self._idle:
                break
            del buckets[oldest]
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            return 0.0
        buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


def retryAfter(wait: float) -> int:
    """
    @param wait: Seconds until a token is available (from
        L{TokenBuckets.take}).
    @return: The C{Retry-After} value: whole seconds, rounded up, at least 1.
    """
    return max(1, math.ceil(wait))


class RateLimit:
    """
    One frontend's rate limit: reads a request's key and takes a token
    from its bucket.

    @ivar config: The settings.
    @ivar policy: The frontend's forwarding policy: its trusted proxies
        decide which address is the client's.
    @ivar buckets: The buckets.
    """

    __slots__ = ("config", "policy", "buckets", "_frontend", "_name", "_header")

    def __init__(
        self, config: RateLimitConfig, policy: ForwardingPolicy, frontend: str
    ) -> None:
        """
        @param config: The frontend's C{rate_limit}.
        @param policy: See L{RateLimit.policy}.
        @param frontend: The frontend's name, for the log.
        """
        self.config = config
        self.policy = policy
        self._frontend = frontend
        self.buckets = TokenBuckets(
            config.requests_per_second, config.burst, config.max_keys, self._full
        )
        kind, _, name = config.key.partition(":")
        self._name = name
        self._header = keyReader(config.key) if kind == "header" else None

    def _full(self) -> None:
        _log.warn(
            "frontend {frontend} rate_limit: {maxKeys} keys are tracked "
            "(max_keys); the least recently seen are forgotten and start "
            "again with a full bucket",
            frontend=self._frontend,
            maxKeys=self.config.max_keys,
        )

    def keyOf(self, request: KeyedRequest) -> Hashable:
        """
        @return: The key C{request} is counted under: the header's value
            (bytes), or, for C{client_ip} and for a request without the
            header (or with an empty one), the client's address (a str, so
            never equal to a header's value).
        """
        header = self._header
        if header is not None:
            value = header(request)
            if value:
                if len(value) > _LONGEST_KEY:
                    # Bounded memory per key, whatever the header's size.
                    return blake2b(value, digest_size=16).digest()
                return value
        peer = str(getattr(request.clientAddress, "host", "unknown"))
        return self.policy.clientIP(peer, request.headers)

    def check(self, request: KeyedRequest, now: float) -> Refusal | None:
        """
        Count C{request}.

        @param request: The request.
        @param now: The current time.
        @return: L{None} if it may proceed, else why not.
        """
        key = self.keyOf(request)
        wait = self.buckets.take(key, now)
        if not wait:
            return None
        # Name the key, never a header's value.
        if isinstance(key, bytes):
            reason = f"rate limited: header {self._name}"
        elif self._header is None:
            reason = f"rate limited: client_ip {key}"
        else:
            reason = f"rate limited: client_ip {key} (no {self._name})"
        return Refusal(retryAfter(wait), reason)


@frozen
class Refusal:
    """
    A request over its rate limit.

    @ivar retryAfter: The C{Retry-After} value: whole seconds until its key
        has a token again (see L{retryAfter}).
    @ivar reason: Why, for the access log: C{"rate limited: client_ip
        192.0.2.7"}, C{"rate limited: header X-Api-Key"}, C{"rate limited:
        client_ip 192.0.2.7 (no X-Api-Key)"} (a request without the header).
    """

    retryAfter: int
    reason: str
