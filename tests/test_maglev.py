# -*- test-case-name: tests.test_maglev -*-
"""
Tests for L{lbtwist.maglev}.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from lbtwist.maglev import (
    DEFAULT_TABLE_SIZE,
    MaglevTable,
    isPrime,
    keyHash,
    tableSize,
)

NAMES = [f"app-{index}" for index in range(10)]
KEYS = [f"10.0.{i // 256}.{i % 256}".encode() for i in range(20000)]


def moved(before: MaglevTable, after: MaglevTable) -> float:
    """
    @return: The fraction of L{KEYS} that map to another backend.
    """
    return sum(before.lookup(key) != after.lookup(key) for key in KEYS) / len(KEYS)


class MaglevTableTests(SynchronousTestCase):
    """
    Tests for L{MaglevTable}.
    """

    def test_everySlotIsOwned(self) -> None:
        """
        Every slot belongs to a backend, and equal weights get equal shares
        to within one slot.
        """
        table = MaglevTable(NAMES, [1] * 10, 1009)
        counts = Counter(table.slots)
        self.assertEqual(sorted(counts), list(range(10)))
        self.assertLessEqual(max(counts.values()) - min(counts.values()), 1)

    def test_weightsScaleShares(self) -> None:
        """
        A backend's share of the slots is proportional to its weight.
        """
        table = MaglevTable(["a", "b", "c"], [1, 2, 5], 8009)
        counts = Counter(table.slots)
        self.assertLessEqual(abs(counts[0] / 8009 - 1 / 8), 0.002)
        self.assertLessEqual(abs(counts[1] / 8009 - 2 / 8), 0.002)
        self.assertLessEqual(abs(counts[2] / 8009 - 5 / 8), 0.002)

    def test_removingOneOfTenMovesAboutATenth(self) -> None:
        """
        Removing one of ten backends moves its own keys (about 1/10) and few
        others: within 20% of the ideal 1/10.
        """
        before = MaglevTable(NAMES, [1] * 10)
        after = MaglevTable(NAMES[:9], [1] * 9)
        self.assertLessEqual(abs(moved(before, after) - 1 / 10), 0.2 / 10)
        others = sum(
            before.lookup(key) != after.lookup(key) and before.lookup(key) != "app-9"
            for key in KEYS
        )
        self.assertLess(others / len(KEYS), 0.01)

    def test_addingAnEleventhMovesAboutAnEleventh(self) -> None:
        """
        Adding an eleventh backend moves about 1/11 of the keys, within 20%,
        nearly all of them to the new backend.
        """
        before = MaglevTable(NAMES, [1] * 10)
        after = MaglevTable(NAMES + ["app-10"], [1] * 11)
        self.assertLessEqual(abs(moved(before, after) - 1 / 11), 0.2 / 11)
        elsewhere = sum(
            before.lookup(key) != after.lookup(key) and after.lookup(key) != "app-10"
            for key in KEYS
        )
        self.assertLess(elsewhere / len(KEYS), 0.01)

    def test_sameTableInEveryProcess(self) -> None:
        """
        Two processes with different hash seeds build the same table: the
        hashes do not depend on Python's salted C{hash()}.
        """
        script = (
            "import hashlib\n"
            "from lbtwist.maglev import MaglevTable\n"
            "t = MaglevTable([f'app-{i}' for i in range(10)], [1] * 10)\n"
            "print(hashlib.sha256(bytes(str(t.slots), 'ascii')).hexdigest())\n"
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        digests = set()
        for seed in ("1", "2"):
            env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=root)
            result = subprocess.run(
                [sys.executable, "-c", script],
                env=env,
                capture_output=True,
                check=True,
                timeout=60,
            )
            digests.add(result.stdout.strip())
        table = MaglevTable(NAMES, [1] * 10)
        here = hashlib.sha256(bytes(str(table.slots), "ascii")).hexdigest()
        self.assertEqual(digests, {here.encode()})

    def test_refusesBadInput(self) -> None:
        """
        No backends, duplicate names, a bad weight or a size that is not a
        prime above the total weight are refused.
        """
        self.assertRaises(ValueError, MaglevTable, [], [])
        self.assertRaises(ValueError, MaglevTable, ["a", "a"], [1, 1])
        self.assertRaises(ValueError, MaglevTable, ["a"], [0])
        self.assertRaises(ValueError, MaglevTable, ["a"], [1, 2])
        self.assertRaises(ValueError, MaglevTable, ["a"], [1], 1000)
        self.assertRaises(ValueError, MaglevTable, ["a", "b"], [3, 3], 5)

    def test_defaultSizeIsPrime(self) -> None:
        """
        The default table size is a prime; L{isPrime} knows small cases.
        """
        self.assertTrue(isPrime(DEFAULT_TABLE_SIZE))
        self.assertEqual([n for n in range(20) if isPrime(n)], [2, 3, 5, 7, 11, 13, 17, 19])

    def test_keyHashIsStableAndSalted(self) -> None:
        """
        L{keyHash} gives fixed 64-bit values, different with another salt.
        """
        self.assertEqual(keyHash(b"x"), keyHash(b"x"))
        self.assertNotEqual(keyHash(b"x"), keyHash(b"x", b"skip"))
        self.assertLess(keyHash(b"x"), 2**64)


class TableSizeTests(SynchronousTestCase):
    """
    Tests for L{tableSize}.
    """

    def test_defaultForSmallPools(self) -> None:
        """
        Pools of up to 655 backends use the default size.
        """
        self.assertEqual(tableSize(3, 3), DEFAULT_TABLE_SIZE)
        self.assertEqual(tableSize(655, 655), DEFAULT_TABLE_SIZE)

    def test_growsWithBackendsAndWeights(self) -> None:
        """
        Larger pools get the smallest prime of at least 100 slots per
        backend, and more than the total weight.
        """
        self.assertEqual(tableSize(1000, 1000), 100003)
        self.assertEqual(tableSize(2, 70000), 70001)
        self.assertEqual(tableSize(1, 1, minimum=7), 101)
