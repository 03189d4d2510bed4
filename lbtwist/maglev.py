# -*- test-case-name: tests.test_maglev -*-
"""
Maglev consistent hashing: a lookup table that maps a key's hash to a
backend, from Google's paper "Maglev: A Fast and Reliable Software Network
Load Balancer" (NSDI 2016), section 3.4.

Each backend has a preference list, a permutation of the table's slots
derived from two hashes of its name; backends take turns claiming their
next preferred free slot until the table is full.  Every backend ends up
with a share of the slots proportional to its weight, and changing the set
of backends moves few keys: removing one of M{N} backends moves about
M{1/N} of the keys, almost all of them the removed backend's own.

Hashes come from BLAKE2b, not Python's C{hash()} (salted per process), so
two processes with the same backends build the same table.  Nothing here
knows about reactors or requests: names in, table out.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

__all__ = ["DEFAULT_TABLE_SIZE", "isPrime", "keyHash", "tableSize", "MaglevTable"]

DEFAULT_TABLE_SIZE = 65537
"""
The default number of slots: a prime, as the paper requires, and at least
100 times the backends of any pool with up to 655 backends.
"""


def isPrime(number: int) -> bool:
    """
    @param number: A positive integer.
    @return: Whether it is prime (trial division; table sizes are small).
    """
    if number < 2:
        return False
    if number % 2 == 0:
        return number == 2
    divisor = 3
    while divisor * divisor <= number:
        if number % divisor == 0:
            return False
        divisor += 2
    return True


def tableSize(backends: int, totalWeight: int, minimum: int = DEFAULT_TABLE_SIZE) -> int:
    """
    The size of the table for a pool: C{minimum}, or the smallest prime at
    least 100 times the number of backends (the paper's advice) and larger
    than their total weight, if that is larger.

    @param backends: How many backends the table holds.
    @param totalWeight: Their total weight.
    @param minimum: A prime, the smallest size to use.
    """
    size = max(minimum, 100 * backends, totalWeight + 1)
    while not isPrime(size):
        size += 1
    return size


def keyHash(key: bytes, salt: bytes = b"") -> int:
    """
    A stable 64-bit hash.

    @param key: The bytes to hash.
    @param salt: Makes independent hash functions of the same key (the
        paper's C{h1} and C{h2}); at most 16 bytes.
    @return: The hash, the same in every process.
    """
    digest = hashlib.blake2b(key, digest_size=8, salt=salt).digest()
    return int.from_bytes(digest, "big")


class MaglevTable:
    """
    A Maglev lookup table over named, weighted backends.

    @ivar size: The number of slots, a prime.
    @ivar names: The backends' names, in the order given.
    @ivar slots: For each slot, the index in L{names} of the backend that
        owns it.
    """

    def __init__(
        self,
        names: Sequence[str],
        weights: Sequence[int],
        size: int = DEFAULT_TABLE_SIZE,
    ) -> None:
        """
        Build the table.

        Weighted population: in each round a backend of weight M{w} claims
        M{w} slots, so shares are proportional to weights.

        @param names: Distinct backend names; at least one.
        @param weights: A positive weight per name.
        @param size: A prime number of slots, larger than the total weight.
        @raise ValueError: On an empty, duplicated or mismatched input, or
            a size that is not a prime larger than the total weight.
        """
        if not names:
            raise ValueError("a Maglev table needs at least one backend")
        if len(set(names)) != len(names):
            raise ValueError("backend names must be distinct")
        if len(weights) != len(names) or min(weights) < 1:
            raise ValueError("one positive weight per backend is required")
        if not isPrime(size) or size <= sum(weights):
            raise ValueError(
                f"table size {size} must be a prime larger than the total weight"
            )
        self.size = size
        self.names = tuple(names)
        self.slots = self._populate(weights)

    def _populate(self, weights: Sequence[int]) -> list[int]:
        """
        Fill every slot, backends taking turns along their preference lists.

        @param weights: The backends' weights.
        @return: The owner of each slot.
        """
        size = self.size
        offsets = []
        skips = []
        for name in self.names:
            encoded = name.encode("utf-8")
            offsets.append(keyHash(encoded, b"offset") % size)
            skips.append(keyHash(encoded, b"skip") % (size - 1) + 1)
        nexts = [0] * len(self.names)
        slots = [-1] * size
        filled = 0
        while True:
            for index, weight in enumerate(weights):
                offset, skip = offsets[index], skips[index]
                for _ in range(weight):
                    candidate = (offset + nexts[index] * skip) % size
                    while slots[candidate] >= 0:
                        nexts[index] += 1
                        candidate = (offset + nexts[index] * skip) % size
                    slots[candidate] = index
                    nexts[index] += 1
                    filled += 1
                    if filled == size:
                        return slots

    def slotFor(self, key: bytes) -> int:
        """
        @param key: A request's key, e.g. a client address.
        @return: The slot the key hashes to.
        """
        return keyHash(key) % self.size

    def lookup(self, key: bytes) -> str:
        """
        @param key: A request's key.
        @return: The name of the backend that owns the key's slot.
        """
        return self.names[self.slots[self.slotFor(key)]]
