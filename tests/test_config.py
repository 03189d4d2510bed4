"""
Tests for L{lbtwist.config}.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from lbtwist.config import (
    STRATEGY_NAMES,
    AdminConfig,
    BackendConfig,
    Config,
    ConfigError,
    FrontendConfig,
    HeaderRules,
    HealthCheckConfig,
    PoolConfig,
    RouteConfig,
    SettingsConfig,
    configFromOptions,
    expandEnvironment,
    loadConfig,
    parseBackendSpec,
    parseConfig,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

EXAMPLE = """
[[frontend]]
name = "web"
listen = "tcp:8080:interface=127.0.0.1"   # a Twisted server endpoint description (or a list of them)
mode = "http"                              # "http" (default); "tcp" comes in a later issue
pool = "app"
header_timeout = 10.0        # seconds to receive a complete request head (slowloris defence), then 408 and close
idle_timeout = 60.0          # seconds a keep-alive client connection may sit idle between requests

[[pool]]
name = "app"
strategy = "round-robin"     # "round-robin" | "weighted-round-robin" | "least-connections"
retries = 2                  # extra attempts on other backends (see proxy-rules.md for which requests)
connect_timeout = 3.0        # seconds
response_timeout = 30.0      # seconds until the backend's response headers
max_body_size = 10485760     # bytes; larger request bodies get 413

[pool.health]
check = "http"               # "http" | "tcp" | "none"
path = "/healthz"
expect_status = "200-399"
interval = 2.0
timeout = 1.0
rise = 2
fall = 3

[[pool.backend]]
url = "http://127.0.0.1:9001"
weight = 1                   # optional, default 1
# name = "app-1"             # optional, default host:port
"""

SEVERAL = """
[[frontend]]
name = "public"
listen = ["tcp:80", "tcp6:80"]
pool = "app"

[[frontend]]
name = "internal"
listen = "unix:/tmp/lbtwist.sock"
pool = "api"
trusted_proxies = ["10.0.0.0/8", "192.0.2.7"]
add_forwarded = true

[[pool]]
name = "app"
strategy = "weighted-round-robin"

[[pool.backend]]
url = "http://10.0.0.1:8000"
weight = 5

[[pool.backend]]
url = "http://10.0.0.2:8000"
name = "b"

[[pool]]
name = "api"
strategy = "least-connections"
rewrite_host = true

[pool.health]
check = "tcp"

[[pool.backend]]
url = "http://[::1]:9000/"
"""


def minimalDocument() -> dict[str, Any]:
    """
    A valid document: frontend "web" in front of pool "app" with two backends.
    """
    return {
        "frontend": [{"name": "web", "listen": "tcp:8080", "pool": "app"}],
        "pool": [
            {
                "name": "app",
                "health": {},
                "backend": [
                    {"url": "http://127.0.0.1:9001"},
                    {"url": "http://127.0.0.1:9002"},
                ],
            }
        ],
    }


def changed(section: str, **keys: object) -> dict[str, Any]:
    """
    L{minimalDocument} with C{keys} set (or, with value L{None}, removed) in
    one section: C{"top"}, C{"frontend"}, C{"pool"}, C{"health"} or
    C{"backend"} (the second backend).
    """
    document = minimalDocument()
    table = {
        "top": document,
        "frontend": document["frontend"][0],
        "pool": document["pool"][0],
        "health": document["pool"][0]["health"],
        "backend": document["pool"][0]["backend"][1],
    }[section]
    for key, value in keys.items():
        if value is None:
            del table[key]
        else:
            table[key] = value
    return document


def selfSignedPEM() -> bytes:
    """
    A freshly generated private key and self-signed certificate, in PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return keyPEM + certificate.public_bytes(serialization.Encoding.PEM)


class ConfigErrorAssertions(SynchronousTestCase):
    """
    Helpers to assert on configuration errors.
    """

    def assertErrors(self, cases: list[tuple[dict[str, Any], str]]) -> None:
        """
        Assert that each document is rejected with exactly its message.
        """
        for document, message in cases:
            with self.subTest(message=message):
                error = self.assertRaises(ConfigError, parseConfig, document)
                self.assertEqual(str(error), message)
                self.assertEqual(error.message, message)
                self.assertIsNone(error.source)


class ExampleTests(SynchronousTestCase):
    """
    The example configuration from the issue.
    """

    def test_parsesToTheDocumentedValues(self) -> None:
        """
        Every value of the example ends up in the configuration as written.
        """
        config = parseConfig(tomllib.loads(EXAMPLE), source="lbtwist.toml")
        self.assertEqual(
            config,
            Config(
                frontends=(
                    FrontendConfig(
                        name="web",
                        listen=("tcp:8080:interface=127.0.0.1",),
                        pool="app",
                        mode="http",
                        header_timeout=10.0,
                        idle_timeout=60.0,
                    ),
                ),
                pools=(
                    PoolConfig(
                        name="app",
                        backends=(
                            BackendConfig(
                                url="http://127.0.0.1:9001",
                                scheme="http",
                                host="127.0.0.1",
                                port=9001,
                                name="127.0.0.1:9001",
                                weight=1,
                            ),
                        ),
                        strategy="round-robin",
                        retries=2,
                        connect_timeout=3.0,
                        response_timeout=30.0,
                        max_body_size=10485760,
                        health=HealthCheckConfig(
                            check="http",
                            path="/healthz",
                            expect_status=((200, 399),),
                            interval=2.0,
                            timeout=1.0,
                            rise=2,
                            fall=3,
                        ),
                    ),
                ),
                source="lbtwist.toml",
                settings=SettingsConfig(state_file="lbtwist.toml.state.json"),
            ),
        )

    def test_summary(self) -> None:
        """
        The summary names the source and counts, in the singular for one.
        """
        config = parseConfig(tomllib.loads(EXAMPLE), source="lbtwist.toml")
        self.assertEqual(
            config.summary(), "lbtwist.toml: 1 frontend, 1 pool, 1 backend"
        )


class DefaultsTests(SynchronousTestCase):
    """
    Keys left out of the file take the documented defaults.
    """

    def test_classDefaults(self) -> None:
        """
        The value classes carry the defaults documented in the contract.
        """
        health = HealthCheckConfig()
        pool = PoolConfig(name="p", backends=())
        frontend = FrontendConfig(name="f", listen=("tcp:80",), pool="p")
        backend = BackendConfig(url="http://h", scheme="http", host="h", port=80)
        cases: list[tuple[object, str, object]] = [
            (health, "check", "tcp"),
            (health, "path", "/healthz"),
            (health, "expect_status", ((200, 399),)),
            (health, "interval", 2.0),
            (health, "timeout", 1.0),
            (health, "rise", 2),
            (health, "fall", 3),
            (health, "passive_fall", 3),
            (health, "initial_state", "down"),
            (pool, "strategy", "round-robin"),
            (pool, "retries", 2),
            (pool, "connect_timeout", 3.0),
            (pool, "response_timeout", 30.0),
            (pool, "max_body_size", 10485760),
            (pool, "rewrite_host", False),
            (pool, "max_idle_connections", 512),
            (pool, "idle_connection_timeout", 60.0),
            (pool, "passive_cooldown", 10.0),
            (pool, "health", HealthCheckConfig()),
            (frontend, "mode", "http"),
            (frontend, "header_timeout", 10.0),
            (frontend, "idle_timeout", 60.0),
            (frontend, "max_header_size", 16384),
            (frontend, "max_target_length", 8192),
            (frontend, "trusted_proxies", ()),
            (frontend, "add_forwarded", False),
            (backend, "name", "h:80"),
            (backend, "weight", 1),
            (Config(frontends=(), pools=()), "source", "<config>"),
        ]
        for value, attribute, expected in cases:
            with self.subTest(attribute=attribute):
                self.assertEqual(getattr(value, attribute), expected)

    def test_minimalDocument(self) -> None:
        """
        A document with only the required keys gets the class defaults.
        """
        document = minimalDocument()
        del document["pool"][0]["health"]
        config = parseConfig(document)
        self.assertEqual(
            config.frontends,
            (FrontendConfig(name="web", listen=("tcp:8080",), pool="app"),),
        )
        self.assertEqual(
            config.pools[0],
            PoolConfig(name="app", backends=config.pools[0].backends),
        )
        self.assertEqual(config.source, "<config>")

    def test_frontendNameDefaultsToItsPosition(self) -> None:
        """
        A frontend without a name is called C{frontend-N}.
        """
        config = parseConfig(changed("frontend", name=None))
        self.assertEqual(config.frontends[0].name, "frontend-1")

    def test_backendNameDefaultsToAddress(self) -> None:
        """
        A backend without a name is called by its address.
        """
        config = parseConfig(minimalDocument())
        self.assertEqual(
            [b.name for b in config.pools[0].backends],
            ["127.0.0.1:9001", "127.0.0.1:9002"],
        )


class HealthCheckDefaultTests(ConfigErrorAssertions):
    """
    Which check a pool gets when its C{[pool.health]} table does not say:
    HAProxy's plain C{check} (TCP connect), or HTTP when an HTTP-only key
    is given.
    """

    def check(self, document: dict[str, Any]) -> str:
        """
        @return: The check kind of the parsed document's first pool.
        """
        return parseConfig(document).pools[0].health.check

    def test_noTableMeansTCP(self) -> None:
        """
        A pool without a C{[pool.health]} table is checked by connecting.
        """
        self.assertEqual(self.check(changed("pool", health=None)), "tcp")

    def test_tableWithoutHTTPKeysMeansTCP(self) -> None:
        """
        A C{[pool.health]} table that only tunes timing is still a TCP
        check.
        """
        self.assertEqual(self.check(changed("health", interval=5.0, rise=1)), "tcp")

    def test_pathOrExpectStatusMeansHTTP(self) -> None:
        """
        Giving C{path} or C{expect_status} without C{check} asks for an HTTP
        check.
        """
        self.assertEqual(self.check(changed("health", path="/ping")), "http")
        self.assertEqual(self.check(changed("health", expect_status=204)), "http")

    def test_explicitCheckWins(self) -> None:
        """
        C{check} given explicitly is taken as given.
        """
        self.assertEqual(self.check(changed("health", check="http")), "http")
        self.assertEqual(self.check(changed("health", check="none")), "none")

    def test_httpKeysWithAnotherCheck(self) -> None:
        """
        C{path} or C{expect_status} with a check that is not HTTP is an
        error rather than silently ignored; so is C{path} in a TCP pool.
        """
        tcpPool = changed("health", path="/ping")
        tcpPool["pool"][0]["backend"] = [{"url": "tcp://127.0.0.1:5432"}]
        tcpPool["frontend"][0]["mode"] = "tcp"
        self.assertErrors(
            [
                (
                    changed("health", check="tcp", path="/ping"),
                    'pool "app" health: path needs check = "http" (check is "tcp")',
                ),
                (
                    changed("health", check="none", expect_status=200),
                    'pool "app" health: expect_status needs check = "http" '
                    '(check is "none")',
                ),
                (tcpPool, 'pool "app" health: path needs http:// backends'),
            ]
        )


class ValueTests(SynchronousTestCase):
    """
    Valid values are accepted and converted.
    """

    def test_integersAreAcceptedForNumbers(self) -> None:
        """
        An integer where seconds are expected becomes a float.
        """
        config = parseConfig(changed("health", interval=5, timeout=1))
        self.assertEqual(config.pools[0].health.interval, 5.0)
        self.assertIsInstance(config.pools[0].health.interval, float)

    def test_passiveFallAndInitialState(self) -> None:
        """
        C{passive_fall} takes an integer from 0 (off) up; C{initial_state}
        is C{"down"} or C{"up"}.
        """
        for passiveFall in [0, 1, 7]:
            with self.subTest(passive_fall=passiveFall):
                config = parseConfig(changed("health", passive_fall=passiveFall))
                self.assertEqual(config.pools[0].health.passive_fall, passiveFall)
        for state in ["down", "up"]:
            with self.subTest(initial_state=state):
                config = parseConfig(changed("health", initial_state=state))
                self.assertEqual(config.pools[0].health.initial_state, state)

    def test_zeroCooldownAndRetries(self) -> None:
        """
        C{retries}, C{max_body_size}, C{max_idle_connections} and
        C{passive_cooldown} may be 0.
        """
        document = changed(
            "pool",
            retries=0,
            max_body_size=0,
            max_idle_connections=0,
            passive_cooldown=0,
        )
        pool = parseConfig(document).pools[0]
        self.assertEqual(
            (
                pool.retries,
                pool.max_body_size,
                pool.max_idle_connections,
                pool.passive_cooldown,
            ),
            (0, 0, 0, 0.0),
        )

    def test_expectStatus(self) -> None:
        """
        C{expect_status} is a code, a range, or a list of both, as a string
        or an integer.
        """
        cases: list[tuple[object, tuple[tuple[int, int], ...]]] = [
            ("200-399", ((200, 399),)),
            ("200", ((200, 200),)),
            (204, ((204, 204),)),
            ("200,204,300-302", ((200, 200), (204, 204), (300, 302))),
            (" 200 , 301-302 ", ((200, 200), (301, 302))),
            ("100-599", ((100, 599),)),
        ]
        for value, expected in cases:
            with self.subTest(value=value):
                config = parseConfig(changed("health", expect_status=value))
                self.assertEqual(config.pools[0].health.expect_status, expected)

    def test_accepts(self) -> None:
        """
        L{HealthCheckConfig.accepts} is true for statuses in a range only.
        """
        health = HealthCheckConfig(expect_status=((200, 200), (300, 302)))
        cases = [
            (199, False),
            (200, True),
            (201, False),
            (300, True),
            (302, True),
            (303, False),
        ]
        for status, expected in cases:
            with self.subTest(status=status):
                self.assertEqual(health.accepts(status), expected)

    def test_backendURLs(self) -> None:
        """
        Backend URLs give scheme, host (IPv6 without brackets) and port (80
        by default); the URL is kept as written.
        """
        cases = [
            ("http://127.0.0.1:9003", "127.0.0.1", 9003, "127.0.0.1:9003"),
            ("http://127.0.0.1:9003/", "127.0.0.1", 9003, "127.0.0.1:9003"),
            ("http://app.internal", "app.internal", 80, "app.internal:80"),
            ("HTTP://App.Internal:8080", "app.internal", 8080, "app.internal:8080"),
            ("http://web_1:8000", "web_1", 8000, "web_1:8000"),
            ("http://[::1]:9001", "::1", 9001, "[::1]:9001"),
            ("http://[2001:DB8::1]", "2001:db8::1", 80, "[2001:db8::1]:80"),
            ("http://localhost:65535", "localhost", 65535, "localhost:65535"),
        ]
        for url, host, port, address in cases:
            with self.subTest(url=url):
                backend = parseConfig(changed("backend", url=url)).pools[0].backends[1]
                self.assertEqual(
                    (
                        backend.url,
                        backend.scheme,
                        backend.host,
                        backend.port,
                        backend.address,
                    ),
                    (url, "http", host, port, address),
                )

    def test_listenDescriptions(self) -> None:
        """
        C{listen} takes one description or a list of them, of any endpoint
        type Twisted knows, including C{systemd:} outside of systemd.
        """
        cases: list[tuple[object, tuple[str, ...]]] = [
            ("tcp:8080", ("tcp:8080",)),
            ("tcp:0:interface=127.0.0.1", ("tcp:0:interface=127.0.0.1",)),
            (
                ["tcp:80", "tcp6:80:interface=\\:\\:1"],
                ("tcp:80", "tcp6:80:interface=\\:\\:1"),
            ),
            ("unix:/run/lbtwist.sock:mode=660", ("unix:/run/lbtwist.sock:mode=660",)),
            ("systemd:domain=INET:index=0", ("systemd:domain=INET:index=0",)),
            ("systemd:domain=INET6:name=web", ("systemd:domain=INET6:name=web",)),
        ]
        for value, expected in cases:
            with self.subTest(value=value):
                config = parseConfig(changed("frontend", listen=value))
                self.assertEqual(config.frontends[0].listen, expected)

    def test_listenSSL(self) -> None:
        """
        An C{ssl:} description with a readable key and certificate is valid.
        """
        pem = Path(self.mktemp())
        pem.write_bytes(selfSignedPEM())
        description = f"ssl:8443:privateKey={pem}"
        config = parseConfig(changed("frontend", listen=description))
        self.assertEqual(config.frontends[0].listen, (description,))

    def test_trustedProxiesAreNormalised(self) -> None:
        """
        Trusted proxies are written as networks, host bits cleared.
        """
        value = ["10.1.2.3/8", "192.0.2.7", "2001:db8::1/64"]
        config = parseConfig(changed("frontend", trusted_proxies=value))
        self.assertEqual(
            config.frontends[0].trusted_proxies,
            ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/64"),
        )

    def test_everyStrategy(self) -> None:
        """
        Every strategy name is accepted.
        """
        for name in STRATEGY_NAMES:
            with self.subTest(name=name):
                config = parseConfig(changed("pool", strategy=name))
                self.assertEqual(config.pools[0].strategy, name)


class SeveralTests(SynchronousTestCase):
    """
    Several frontends and pools in one file.
    """

    def setUp(self) -> None:
        self.config = parseConfig(tomllib.loads(SEVERAL), source="several.toml")

    def test_frontends(self) -> None:
        """
        Each frontend keeps its own listen descriptions, pool and options.
        """
        public, internal = self.config.frontends
        self.assertEqual(
            (public.name, public.listen, public.pool),
            ("public", ("tcp:80", "tcp6:80"), "app"),
        )
        self.assertEqual(
            (internal.name, internal.listen, internal.pool, internal.add_forwarded),
            ("internal", ("unix:/tmp/lbtwist.sock",), "api", True),
        )
        self.assertEqual(internal.trusted_proxies, ("10.0.0.0/8", "192.0.2.7/32"))

    def test_pools(self) -> None:
        """
        Each pool keeps its own strategy, health check and backends.
        """
        app = self.config.pool("app")
        api = self.config.pool("api")
        self.assertEqual(app.strategy, "weighted-round-robin")
        self.assertEqual(
            [(b.name, b.weight) for b in app.backends], [("10.0.0.1:8000", 5), ("b", 1)]
        )
        self.assertEqual(app.health, HealthCheckConfig())
        self.assertEqual(
            (api.strategy, api.rewrite_host, api.health.check),
            ("least-connections", True, "tcp"),
        )
        self.assertEqual([b.address for b in api.backends], ["[::1]:9000"])

    def test_unknownPool(self) -> None:
        """
        L{Config.pool} raises L{KeyError} for a name that is not a pool.
        """
        self.assertRaises(KeyError, self.config.pool, "web")

    def test_summary(self) -> None:
        """
        The summary counts frontends, pools and all backends, in the plural.
        """
        self.assertEqual(
            self.config.summary(), "several.toml: 2 frontends, 2 pools, 3 backends"
        )
        self.assertEqual(self.config.counts(), "2 frontends, 2 pools, 3 backends")


class StructureErrorTests(ConfigErrorAssertions):
    """
    Unknown, missing and misplaced keys and sections.
    """

    def test_unknownKeys(self) -> None:
        """
        An unknown key anywhere is an error naming its section.
        """
        self.assertErrors(
            [
                (changed("top", frontends=[]), 'top level: unknown key "frontends"'),
                (
                    changed("frontend", listn="tcp:80"),
                    'frontend "web": unknown key "listn"',
                ),
                (
                    changed("frontend", name=None, lisen="x"),
                    'frontend 1: unknown key "lisen"',
                ),
                (changed("pool", retry=1), 'pool "app": unknown key "retry"'),
                (changed("pool", backends=[]), 'pool "app": unknown key "backends"'),
                (
                    changed("health", intervall=1),
                    'pool "app" health: unknown key "intervall"',
                ),
                (
                    changed("backend", wieght=2),
                    'pool "app" backend 2: unknown key "wieght"',
                ),
            ]
        )

    def test_missingKeys(self) -> None:
        """
        A missing required key is an error naming its section.
        """
        self.assertErrors(
            [
                ({}, 'top level: missing required key "frontend"'),
                (changed("top", pool=None), 'top level: missing required key "pool"'),
                (
                    changed("frontend", listen=None),
                    'frontend "web": missing required key "listen"',
                ),
                (
                    changed("frontend", pool=None),
                    'frontend "web": missing required key "pool"',
                ),
                (changed("pool", name=None), 'pool 1: missing required key "name"'),
                (
                    changed("pool", backend=None),
                    'pool "app": missing required key "backend"',
                ),
                (
                    changed("backend", url=None),
                    'pool "app" backend 2: missing required key "url"',
                ),
            ]
        )

    def test_sections(self) -> None:
        """
        Sections must be tables or arrays of tables, and arrays not empty.
        """
        self.assertErrors(
            [
                (
                    changed("top", pool={"name": "app"}),
                    "top level: pool must be an array of tables, written [[pool]]",
                ),
                (
                    changed("top", frontend=[]),
                    "top level: frontend must not be empty: add a [[frontend]] section",
                ),
                (
                    changed("pool", health=[]),
                    'pool "app": health must be a table, written [pool.health]',
                ),
                (
                    changed("pool", backend=[]),
                    'pool "app": backend must not be empty: add a [[pool.backend]] section',
                ),
                (
                    changed("pool", backend=["http://x"]),
                    'pool "app": backend must be an array of tables, written [[pool.backend]]',
                ),
            ]
        )

    def test_sectionsNamedByPositionWithoutUsableName(self) -> None:
        """
        A section whose name is missing or not a string is named by position.
        """
        self.assertErrors(
            [
                (changed("pool", name=3), "pool 1: name must be a string"),
                (changed("pool", name=""), "pool 1: name must not be empty"),
                (changed("frontend", name=False), "frontend 1: name must be a string"),
            ]
        )


class TypeErrorTests(ConfigErrorAssertions):
    """
    Values of the wrong type.
    """

    def test_types(self) -> None:
        """
        Each kind of value rejects the other TOML types; a bool is not an
        integer or a number, a float is not an integer.
        """
        self.assertErrors(
            [
                (changed("frontend", pool=1), 'frontend "web": pool must be a string'),
                (
                    changed("frontend", mode=["http"]),
                    'frontend "web": mode must be a string',
                ),
                (changed("health", path=1), 'pool "app" health: path must be a string'),
                (
                    changed("pool", retries="2"),
                    'pool "app": retries must be an integer >= 0',
                ),
                (
                    changed("pool", retries=2.0),
                    'pool "app": retries must be an integer >= 0',
                ),
                (
                    changed("pool", retries=True),
                    'pool "app": retries must be an integer >= 0',
                ),
                (
                    changed("backend", weight=True),
                    'pool "app" backend 2: weight must be a positive integer',
                ),
                (
                    changed("frontend", header_timeout="10"),
                    'frontend "web": header_timeout must be a number greater than 0',
                ),
                (
                    changed("health", timeout=True),
                    'pool "app" health: timeout must be a number greater than 0',
                ),
                (
                    changed("pool", rewrite_host="yes"),
                    'pool "app": rewrite_host must be true or false',
                ),
                (
                    changed("frontend", add_forwarded=1),
                    'frontend "web": add_forwarded must be true or false',
                ),
                (
                    changed("frontend", listen=80),
                    'frontend "web": listen must be a string or a list of strings',
                ),
                (
                    changed("frontend", listen=["tcp:80", 81]),
                    'frontend "web": listen must be a string or a list of strings',
                ),
                (
                    changed("frontend", trusted_proxies={"a": 1}),
                    'frontend "web": trusted_proxies must be a string or a list of strings',
                ),
                (
                    changed("health", expect_status=2.0),
                    'pool "app" health: expect_status must be a status code or a string '
                    'like "200-399"',
                ),
                (
                    changed("backend", url=9002),
                    'pool "app" backend 2: url must be a string',
                ),
            ]
        )


class RangeErrorTests(ConfigErrorAssertions):
    """
    Values outside their range.
    """

    def test_weight(self) -> None:
        """
        A weight must be a positive integer (the message from the issue).
        """
        self.assertErrors(
            [
                (
                    changed("backend", weight=0),
                    'pool "app" backend 2: weight must be a positive integer',
                ),
                (
                    changed("backend", weight=-1),
                    'pool "app" backend 2: weight must be a positive integer',
                ),
                (
                    changed("backend", weight=1.5),
                    'pool "app" backend 2: weight must be a positive integer',
                ),
            ]
        )

    def test_integers(self) -> None:
        """
        Counts must be at least 0 or 1, as each means.
        """
        self.assertErrors(
            [
                (
                    changed("pool", retries=-1),
                    'pool "app": retries must be an integer >= 0',
                ),
                (
                    changed("pool", max_body_size=-1),
                    'pool "app": max_body_size must be an integer >= 0',
                ),
                (
                    changed("pool", max_idle_connections=-1),
                    'pool "app": max_idle_connections must be an integer >= 0',
                ),
                (
                    changed("health", rise=0),
                    'pool "app" health: rise must be a positive integer',
                ),
                (
                    changed("health", fall=0),
                    'pool "app" health: fall must be a positive integer',
                ),
                (
                    changed("frontend", max_header_size=0),
                    'frontend "web": max_header_size must be a positive integer',
                ),
                (
                    changed("frontend", max_target_length=0),
                    'frontend "web": max_target_length must be a positive integer',
                ),
            ]
        )

    def test_seconds(self) -> None:
        """
        Timeouts and intervals must be finite and greater than 0; the
        passive cooldown may be 0.
        """
        cases = []
        for section, key in [
            ("frontend", "header_timeout"),
            ("frontend", "idle_timeout"),
            ("pool", "connect_timeout"),
            ("pool", "response_timeout"),
            ("pool", "idle_connection_timeout"),
            ("health", "interval"),
            ("health", "timeout"),
        ]:
            where = {
                "frontend": 'frontend "web"',
                "pool": 'pool "app"',
                "health": 'pool "app" health',
            }
            message = f"{where[section]}: {key} must be a number greater than 0"
            for value in (0, 0.0, -1.5, math.inf, math.nan):
                cases.append((changed(section, **{key: value}), message))
        for value in (-0.1, math.inf):
            cases.append(
                (
                    changed("pool", passive_cooldown=value),
                    'pool "app": passive_cooldown must be a number >= 0',
                )
            )
        self.assertErrors(cases)


class ChoiceErrorTests(ConfigErrorAssertions):
    """
    Values that must be one of a few names.
    """

    def test_choices(self) -> None:
        """
        Strategy, check and mode accept only their names; C{tcp} mode comes later.
        """
        self.assertErrors(
            [
                (
                    changed("pool", strategy="random"),
                    'pool "app": strategy "random" is not one of "round-robin", '
                    '"weighted-round-robin", "least-connections", "random-two", '
                    '"consistent-hash", "peak-ewma"',
                ),
                (
                    changed("health", check="icmp"),
                    'pool "app" health: check "icmp" is not one of "http", "tcp", "none"',
                ),
                (
                    changed("frontend", mode="tcp"),
                    'frontend "web": mode "tcp" cannot use pool "app", whose backends are http:// URLs',
                ),
                (
                    changed("frontend", mode="udp"),
                    'frontend "web": mode "udp" is not one of "http", "tcp"',
                ),
            ]
        )

    def test_healthKeys(self) -> None:
        """
        C{initial_state} is C{"down"} or C{"up"}; C{passive_fall} is an
        integer of at least 0; errors name the key.
        """
        self.assertErrors(
            [
                (
                    changed("health", initial_state="maybe"),
                    'pool "app" health: initial_state "maybe" is not one of '
                    '"down", "up"',
                ),
                (
                    changed("health", initial_state=True),
                    'pool "app" health: initial_state must be a string',
                ),
                (
                    changed("health", passive_fall=-1),
                    'pool "app" health: passive_fall must be an integer >= 0',
                ),
                (
                    changed("health", passive_fall=1.5),
                    'pool "app" health: passive_fall must be an integer >= 0',
                ),
                (
                    changed("health", passive_fall=True),
                    'pool "app" health: passive_fall must be an integer >= 0',
                ),
            ]
        )

    def test_healthPath(self) -> None:
        """
        The health check path must start with a slash.
        """
        self.assertErrors(
            [
                (
                    changed("health", path="healthz"),
                    'pool "app" health: path "healthz" must start with "/"',
                )
            ]
        )


class ExpectStatusErrorTests(ConfigErrorAssertions):
    """
    Malformed C{expect_status} values.
    """

    def test_expectStatus(self) -> None:
        """
        Codes must be 100-599, ranges not empty, and the syntax right.
        """
        where = 'pool "app" health: expect_status'
        syntax = 'must be status codes and ranges like "200,204,300-399"'
        self.assertErrors(
            [
                (changed("health", expect_status="abc"), f'{where} "abc" {syntax}'),
                (changed("health", expect_status="200,"), f'{where} "200," {syntax}'),
                (changed("health", expect_status="200-"), f'{where} "200-" {syntax}'),
                (changed("health", expect_status="2xx"), f'{where} "2xx" {syntax}'),
                (
                    changed("health", expect_status="600"),
                    f'{where} "600": status codes must be 100-599',
                ),
                (
                    changed("health", expect_status=99),
                    f'{where} "99": status codes must be 100-599',
                ),
                (
                    changed("health", expect_status="200-700"),
                    f'{where} "200-700": status codes must be 100-599',
                ),
                (
                    changed("health", expect_status="399-200"),
                    f'{where} "399-200": range 399-200 is empty',
                ),
            ]
        )


class URLErrorTests(ConfigErrorAssertions):
    """
    Backend URLs other than C{http://host[:port]}.
    """

    def test_urls(self) -> None:
        """
        Each kind of bad URL is reported with the URL and the problem.
        """
        cases = [
            ("ftp://127.0.0.1", "must be an http://, https:// or tcp:// URL"),
            ("127.0.0.1:9001", "must be an http://, https:// or tcp:// URL"),
            ("http://user:pw@127.0.0.1", "must not contain user information"),
            ("http://127.0.0.1/app", 'must not have a path ("/app")'),
            ("http://127.0.0.1?x=1", "must not have a query or fragment"),
            ("http://127.0.0.1/#top", "must not have a query or fragment"),
            ("http://", "has no host"),
            ("http://:80", "has no host"),
            (
                "http://::1:9001",
                '"::1:9001" is not host[:port] (an IPv6 address goes in brackets: '
                "http://[::1]:8080)",
            ),
            ("http://[::g]:9001", '"[::g]" is not an IPv6 address'),
            ("http://[127.0.0.1]:9001", '"[127.0.0.1]" is not an IPv6 address'),
            ("http://300.0.0.1", '"300.0.0.1" is not an IPv4 address'),
            ("http://bad host", '"bad host" is not a host name or IP address'),
            ("http://-x", '"-x" is not a host name or IP address'),
            ("http://127.0.0.1:0", 'port "0" must be 1-65535'),
            ("http://127.0.0.1:65536", 'port "65536" must be 1-65535'),
            ("http://127.0.0.1:http", 'port "http" must be 1-65535'),
            ("http://127.0.0.1:", 'port "" must be 1-65535'),
        ]
        self.assertErrors(
            [
                (
                    changed("backend", url=url),
                    f'pool "app" backend 2: url "{url}": {problem}',
                )
                for url, problem in cases
            ]
        )


class ListenErrorTests(ConfigErrorAssertions):
    """
    Endpoint descriptions Twisted cannot use.
    """

    def test_listen(self) -> None:
        """
        The error gives the description and Twisted's reason.
        """
        missing = Path(self.mktemp()).absolute()
        cases = [
            ("tcp:abc", "invalid literal for int() with base 10: 'abc'"),
            ("tcp:70000", "port must be 0-65535"),
            ("tcp6:-1", "port must be 0-65535"),
            (
                "tcp:8080:colour=blue",
                "_parseTCP() got an unexpected keyword argument 'colour'",
            ),
            ("carrier-pigeon:1", "Unknown endpoint type: 'carrier-pigeon'"),
            ("systemd:domain=INET", "Specify exactly one of descriptor index or name"),
            (
                f"ssl:443:privateKey={missing}",
                f"[Errno 2] No such file or directory: '{missing}'",
            ),
        ]
        self.assertErrors(
            [
                (
                    changed("frontend", listen=description),
                    f'frontend "web": listen "{description}": {reason}',
                )
                for description, reason in cases
            ]
            + [
                (
                    changed("frontend", listen=[]),
                    'frontend "web": listen must not be empty',
                ),
                (
                    changed("frontend", listen=["tcp:80", "tcp:x"]),
                    'frontend "web": listen "tcp:x": invalid literal for int() with base 10: \'x\'',
                ),
            ]
        )

    def test_addressesSuggestDescriptions(self) -> None:
        """
        A port or an address written the usual way is refused with the
        endpoint description it means.
        """
        cases = [
            ("8080", "tcp:8080"),
            (":8080", "tcp:8080"),
            ("*:8080", "tcp:8080"),
            ("127.0.0.1:8080", "tcp:8080:interface=127.0.0.1"),
            ("localhost:8080", "tcp:8080:interface=localhost"),
            ("[::1]:8080", "tcp6:8080:interface=\\:\\:1"),
        ]
        self.assertErrors(
            [
                (
                    changed("frontend", listen=description),
                    f'frontend "web": listen "{description}" is not an endpoint '
                    f'description; did you mean "{suggestion}"?',
                )
                for description, suggestion in cases
            ]
        )
        e = self.assertRaises(ConfigError, configFromOptions, ["8080"], ["http://h:1"])
        self.assertEqual(
            str(e),
            '--listen "8080" is not an endpoint description; did you mean "tcp:8080"?',
        )

    def test_trustedProxies(self) -> None:
        """
        Trusted proxies must be IP addresses or networks.
        """
        self.assertErrors(
            [
                (
                    changed(
                        "frontend", trusted_proxies=["10.0.0.0/8", "proxy.internal"]
                    ),
                    'frontend "web": trusted_proxies "proxy.internal" is not an IP address '
                    "or network",
                ),
                (
                    changed("frontend", trusted_proxies="10.0.0.0/33"),
                    'frontend "web": trusted_proxies "10.0.0.0/33" is not an IP address '
                    "or network",
                ),
            ]
        )


class ReferenceErrorTests(ConfigErrorAssertions):
    """
    Names that repeat or refer to nothing.
    """

    def test_duplicateNames(self) -> None:
        """
        Frontend, pool and backend names are unique (backends within a pool).
        """
        twoFrontends = minimalDocument()
        twoFrontends["frontend"].append(
            {"name": "web", "listen": "tcp:8081", "pool": "app"}
        )
        twoPools = minimalDocument()
        twoPools["pool"].append(copy.deepcopy(twoPools["pool"][0]))
        self.assertErrors(
            [
                (twoFrontends, 'frontend 2: name "web" is already used by frontend 1'),
                (twoPools, 'pool 2: name "app" is already used by pool 1'),
                (
                    changed("backend", url="http://127.0.0.1:9001"),
                    'pool "app" backend 2: name "127.0.0.1:9001" is already used by backend 1',
                ),
                (
                    changed("backend", name="127.0.0.1:9001"),
                    'pool "app" backend 2: name "127.0.0.1:9001" is already used by backend 1',
                ),
            ]
        )

    def test_sameBackendInTwoPools(self) -> None:
        """
        Two pools may share a backend.
        """
        document = minimalDocument()
        document["pool"].append(copy.deepcopy(document["pool"][0]))
        document["pool"][1]["name"] = "other"
        self.assertEqual(len(parseConfig(document).pools), 2)

    def test_undefinedPool(self) -> None:
        """
        A frontend must name a pool that is defined.
        """
        self.assertErrors(
            [
                (
                    changed("frontend", pool="ap"),
                    'frontend "web": pool "ap" is not defined (pools: "app")',
                ),
                (
                    changed("frontend", pool="ap", name=None),
                    'frontend 1: pool "ap" is not defined (pools: "app")',
                ),
            ]
        )


class LoadConfigTests(SynchronousTestCase):
    """
    Reading configuration files.
    """

    def write(self, content: bytes) -> str:
        """
        @return: The name of a new file holding C{content}.
        """
        path = str(self.mktemp())
        Path(path).write_bytes(content)
        return path

    def test_loads(self) -> None:
        """
        A valid file gives its configuration, with the path as its source.
        """
        path = self.write(EXAMPLE.encode())
        config = loadConfig(path)
        self.assertEqual(config, parseConfig(tomllib.loads(EXAMPLE), source=path))

    def test_errors(self) -> None:
        """
        Every error names the file: unreadable, not UTF-8, not TOML, invalid.
        """
        missing = self.mktemp()
        directory = self.mktemp()
        Path(directory).mkdir()
        invalid = EXAMPLE.replace("weight = 1 ", "weight = 0 ").encode()
        cases = [
            (missing, "cannot read: No such file or directory"),
            (directory, "cannot read: Is a directory"),
            (self.write(b"name = \xff"), "cannot read: not UTF-8 text"),
            (
                self.write(b"[[frontend]\n"),
                "invalid TOML: Expected ']]' at the end of an array declaration "
                "(at line 1, column 11)",
            ),
            (
                self.write(invalid),
                'pool "app" backend 1: weight must be a positive integer',
            ),
        ]
        for path, message in cases:
            with self.subTest(message=message):
                error = self.assertRaises(ConfigError, loadConfig, path)
                self.assertEqual((error.source, error.message), (path, message))
                self.assertEqual(str(error), f"{path}: {message}")


class AccessLogFormatTests(SynchronousTestCase):
    """
    C{access_log_format} as a format string.
    """

    def parse(self, fmt: str) -> Config:
        document = minimalDocument()
        document["settings"] = {"access_log": "-", "access_log_format": fmt}
        return parseConfig(document)

    def test_formatString(self) -> None:
        """
        A format string with known fields is kept as written.
        """
        fmt = "{client_ip} {method} {path} {status} {{literal}} {duration_ms}"
        self.assertEqual(self.parse(fmt).settings.access_log_format, fmt)

    def test_unknownField(self) -> None:
        """
        An unknown field is an error naming the key and the field.
        """
        e = self.assertRaises(ConfigError, self.parse, "{client_ip} {colour}")
        self.assertTrue(
            str(e).startswith(
                '[settings]: access_log_format has unknown field "{colour}" '
                "(fields: time, "
            ),
            str(e),
        )

    def test_unmatchedBrace(self) -> None:
        """
        An unmatched brace is an error naming the key.
        """
        e = self.assertRaises(ConfigError, self.parse, "{status")
        self.assertIn(
            '[settings]: access_log_format "{status" is not a valid format string',
            str(e),
        )


class EnvironmentTests(SynchronousTestCase):
    """
    C{${NAME}}, C{${NAME:-default}} and C{$$} in the string values of a file.
    """

    ENVIRON = {"HOST": "10.0.0.7", "EMPTY": "", "PORT": "8443"}

    def test_expand(self) -> None:
        """
        A set variable is its value; a default is used when the variable is
        unset or empty; C{$$} is one C{$}; a C{$} before anything else stays.
        """
        cases = [
            ("http://${HOST}:9001", "http://10.0.0.7:9001"),
            ("${PORT:-80}", "8443"),
            ("${UNSET:-80}", "80"),
            ("${EMPTY:-x}", "x"),
            ("${EMPTY}", ""),
            ("${UNSET:-}", ""),
            ("a$$b", "a$b"),
            ("$${HOST}", "${HOST}"),
            ("$$$$", "$$"),
            ("5$ or $HOST", "5$ or $HOST"),
            ("${HOST}${PORT}", "10.0.0.78443"),
        ]
        for text, expected in cases:
            self.assertEqual(expandEnvironment(text, self.ENVIRON), expected, text)

    def parse(self, document: dict[str, Any], **environ: str) -> Config:
        return parseConfig(document, environ=environ)

    def test_values(self) -> None:
        """
        String values anywhere are expanded, in lists too, after TOML
        parsing: TOML's own quoting is unaffected and keys are not expanded.
        """
        document = tomllib.loads(
            """
            [[frontend]]
            name = "${FRONTEND:-web}"
            listen = ["tcp:${PORT}:interface=127.0.0.1", 'tcp:${PORT2:-0}']
            pool = "app"
            [[pool]]
            name = "app"
            [pool.health]
            path = "${HEALTH_PATH:-/}"
            [[pool.backend]]
            url = "http://${HOST}:9001"
            name = "a$$b"
            weight = 3
            [settings]
            access_log = "${LOGS}/access.log"
            """
        )
        config = self.parse(document, PORT="8080", HOST="10.0.0.7", LOGS="/var/log")
        self.assertEqual(config.frontends[0].name, "web")
        self.assertEqual(
            config.frontends[0].listen, ("tcp:8080:interface=127.0.0.1", "tcp:0")
        )
        self.assertEqual(config.pools[0].health.path, "/")
        [backend] = config.pools[0].backends
        self.assertEqual((backend.url, backend.name, backend.weight),
                         ("http://10.0.0.7:9001", "a$b", 3))
        self.assertEqual(config.settings.access_log, "/var/log/access.log")
        document = minimalDocument()
        document["pool"][0]["${KEY}"] = 1
        e = self.assertRaises(ConfigError, self.parse, document, KEY="retries")
        self.assertEqual(str(e), 'pool "app": unknown key "${KEY}"')

    def test_unset(self) -> None:
        """
        An unset variable without a default is an error naming the section,
        the key and the variable.
        """
        cases = [
            (
                changed("backend", url="http://${BACKEND_HOST}:9002"),
                'pool "app" backend 2: url: environment variable BACKEND_HOST '
                "is not set",
            ),
            (
                changed("frontend", listen=["tcp:80", "tcp:${PORT}"]),
                'frontend "web": listen: environment variable PORT is not set',
            ),
            (
                changed("health", path="/${P}"),
                'pool "app" health: path: environment variable P is not set',
            ),
            (
                dict(minimalDocument(), admin={"token": "${TOKEN}"}),
                "[admin]: token: environment variable TOKEN is not set",
            ),
            (
                changed("pool", name="${POOL}"),
                "pool 1: name: environment variable POOL is not set",
            ),
            (
                changed("backend", url="http://${1X}"),
                'pool "app" backend 2: url: "${1X}" is not an environment variable '
                "reference: write ${NAME} or ${NAME:-default}, and $$ for a "
                "literal $",
            ),
            (
                changed("backend", url="http://${HOST"),
                'pool "app" backend 2: url: "${HOST" is not an environment variable '
                "reference: write ${NAME} or ${NAME:-default}, and $$ for a "
                "literal $",
            ),
        ]
        for document, message in cases:
            e = self.assertRaises(ConfigError, self.parse, document)
            self.assertEqual(str(e), message)

    def test_expandedNameInLabels(self) -> None:
        """
        Errors in a section whose name comes from the environment name it
        by its expanded name.
        """
        document = changed("pool", name="${POOL}")
        document["frontend"][0]["pool"] = "shop"
        document["pool"][0]["backend"][0]["url"] = "http://${NOPE}"
        e = self.assertRaises(ConfigError, self.parse, document, POOL="shop")
        self.assertEqual(
            str(e),
            'pool "shop" backend 1: url: environment variable NOPE is not set',
        )

    def test_loadConfigUsesEnvironment(self) -> None:
        """
        L{loadConfig} expands from the process environment by default, and
        from the mapping it is given; its errors name the file.
        """
        path = self.mktemp()
        Path(path).write_text(EXAMPLE.replace("127.0.0.1:9001", "${LBTWIST_TEST_HOST}"))
        self.patch(os, "environ", {"LBTWIST_TEST_HOST": "192.0.2.1:80"})
        self.assertEqual(loadConfig(path).pools[0].backends[0].host, "192.0.2.1")
        self.assertEqual(
            loadConfig(path, {"LBTWIST_TEST_HOST": "192.0.2.2"}).pools[0].backends[0].host,
            "192.0.2.2",
        )
        e = self.assertRaises(ConfigError, loadConfig, path, {})
        self.assertEqual(
            str(e),
            f'{path}: pool "app" backend 1: url: environment variable '
            "LBTWIST_TEST_HOST is not set",
        )


class QuickFormTests(SynchronousTestCase):
    """
    Backends and configurations from command-line options.
    """

    def test_parseBackendSpec(self) -> None:
        """
        The quick form is a URL, then optional C{weight=} and C{name=}.
        """
        cases = [
            ("http://127.0.0.1:9001", "127.0.0.1:9001", 1),
            ("http://127.0.0.1:9002,weight=3", "127.0.0.1:9002", 3),
            ("http://127.0.0.1:9002,name=b", "b", 1),
            ("http://[::1]:9002, weight = 2 ,name=b", "b", 2),
        ]
        for spec, name, weight in cases:
            with self.subTest(spec=spec):
                backend = parseBackendSpec(spec, 1)
                self.assertEqual((backend.name, backend.weight), (name, weight))

    def test_parseBackendSpecErrors(self) -> None:
        """
        Errors name the C{--backend} option and the problem.
        """
        cases = [
            ("http://x,foo=1", 'unknown option "foo"'),
            ("http://x,url=http://y", 'unknown option "url"'),
            ("http://x,weight=0", "weight must be a positive integer"),
            ("http://x,weight=two", "weight must be a positive integer"),
            ("http://x,weight", "give weight=VALUE once"),
            ("http://x,name=a,name=b", "give name=VALUE once"),
            ("http://x,name=", "name must not be empty"),
            ("ftp://x", 'url "ftp://x": must be an http://, https:// or tcp:// URL'),
        ]
        for spec, problem in cases:
            with self.subTest(spec=spec):
                error = self.assertRaises(ConfigError, parseBackendSpec, spec, 1)
                self.assertEqual(str(error), f'--backend "{spec}": {problem}')

    def test_configFromOptions(self) -> None:
        """
        The options make one frontend and one pool called C{default}.
        """
        config = configFromOptions(
            ["tcp:8081"],
            ["http://127.0.0.1:9001", "http://127.0.0.1:9002,weight=3"],
            strategy="weighted-round-robin",
            healthPath="/healthz",
        )
        self.assertEqual(
            config.frontends,
            (FrontendConfig(name="default", listen=("tcp:8081",), pool="default"),),
        )
        pool = config.pool("default")
        self.assertEqual(pool.strategy, "weighted-round-robin")
        self.assertEqual([b.weight for b in pool.backends], [1, 3])
        self.assertEqual(pool.health, HealthCheckConfig(check="http", path="/healthz"))
        self.assertEqual(
            config.summary(), "<command line>: 1 frontend, 1 pool, 2 backends"
        )

    def test_configFromOptionsDefaults(self) -> None:
        """
        Without C{--listen} the frontend listens on C{tcp:8080}; without
        C{--health-path} backends are checked by connecting over TCP.
        """
        config = configFromOptions([], ["http://127.0.0.1:9001"])
        self.assertEqual(config.frontends[0].listen, ("tcp:8080",))
        self.assertEqual(config.pools[0].strategy, "round-robin")
        self.assertEqual(config.pools[0].health, HealthCheckConfig(check="tcp"))

    def test_configFromOptionsErrors(self) -> None:
        """
        Errors name the option at fault.
        """
        backend = ["http://127.0.0.1:9001"]
        cases: list[tuple[dict[str, Any], str]] = [
            (
                {"listen": ["tcp:abc"], "backends": backend},
                "--listen \"tcp:abc\": invalid literal for int() with base 10: 'abc'",
            ),
            ({"listen": [], "backends": []}, "at least one --backend is required"),
            (
                {"listen": [], "backends": backend, "strategy": "random"},
                '--strategy "random" is not one of "round-robin", "weighted-round-robin", '
                '"least-connections", "random-two", "consistent-hash", "peak-ewma"',
            ),
            (
                {"listen": [], "backends": backend, "healthPath": "healthz"},
                '--health-path "healthz" must start with "/"',
            ),
            (
                {"listen": [], "backends": backend * 2},
                '--backend 2: name "127.0.0.1:9001" is already used by --backend 1',
            ),
        ]
        for options, message in cases:
            with self.subTest(message=message):
                error = self.assertRaises(ConfigError, configFromOptions, **options)
                self.assertEqual(str(error), message)


class IsolationTests(SynchronousTestCase):
    """
    The configuration module stays away from the reactor.
    """

    def test_importsNoReactor(self) -> None:
        """
        Importing and using L{lbtwist.config} does not install a reactor.
        """
        code = (
            "import sys, lbtwist.config as c\n"
            "c.configFromOptions(['tcp:8080', 'systemd:domain=INET:index=0'], ['http://h'])\n"
            "sys.exit('twisted.internet.reactor' in sys.modules)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=PROJECT_ROOT,
            capture_output=True,
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stderr), (0, b""))


class AdminAndSettingsTests(SynchronousTestCase):
    """
    The C{[admin]} and C{[settings]} sections.
    """

    BASE = (
        '[[frontend]]\nname = "web"\nlisten = "tcp:8080"\npool = "app"\n'
        '[[pool]]\nname = "app"\n[[pool.backend]]\nurl = "http://127.0.0.1:9001"\n'
    )

    def parse(self, extra: str, source: str = "lbtwist.toml") -> Config:
        return parseConfig(tomllib.loads(self.BASE + extra), source=source)

    def test_defaults(self) -> None:
        """
        Without the sections there is no admin listener and no access log,
        and runtime state goes next to the configuration file.
        """
        config = self.parse("")
        self.assertIsNone(config.admin)
        self.assertEqual(
            config.settings,
            SettingsConfig(
                access_log=None,
                access_log_format="combined",
                state_file="lbtwist.toml.state.json",
            ),
        )
        self.assertIsNone(self.parse("", source="<config>").settings.state_file)

    def test_admin(self) -> None:
        """
        The admin listener and token are read.
        """
        config = self.parse(
            '[admin]\nlisten = "tcp:9999:interface=0.0.0.0"\ntoken = "s3cret"\n'
        )
        self.assertEqual(
            config.admin, AdminConfig(listen="tcp:9999:interface=0.0.0.0", token="s3cret")
        )
        self.assertEqual(self.parse("[admin]\n").admin, AdminConfig())

    def test_tokenFile(self) -> None:
        """
        C{token_file} is read relative to the configuration file's
        directory; its trailing line break is not part of the token, and a
        token from a file allows a non-loopback listener.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "secrets"))
        with open(os.path.join(directory, "secrets", "admin.token"), "w") as f:
            f.write("from-a-file\n")
        config = self.parse(
            '[admin]\nlisten = "tcp:8081"\ntoken_file = "secrets/admin.token"\n',
            source=os.path.join(directory, "lbtwist.toml"),
        )
        self.assertEqual(
            config.admin,
            AdminConfig(
                listen="tcp:8081",
                token="from-a-file",
                token_file=os.path.join(directory, "secrets", "admin.token"),
            ),
        )

    def test_tokenFileErrors(self) -> None:
        """
        A missing, empty or unreadable token file, or C{token} together
        with C{token_file}, is an error naming the key.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        source = os.path.join(directory, "lbtwist.toml")
        empty = os.path.join(directory, "empty")
        with open(empty, "w") as f:
            f.write("\n")
        for extra, expected in [
            ('token_file = "missing"', "[admin]: token_file"),
            ('token_file = "missing"', "cannot be read: No such file"),
            ('token_file = "empty"', f'[admin]: token_file "{empty}" is empty'),
            ('token_file = "."', "cannot be read"),
            ('token = "x"\ntoken_file = "empty"', "token and token_file"),
        ]:
            e = self.assertRaises(
                ConfigError, self.parse, f"[admin]\n{extra}\n", source=source
            )
            self.assertIn(expected, str(e))

    def test_nonLoopbackAdminNeedsToken(self) -> None:
        """
        An admin listener reachable from other hosts without a token is an
        error.
        """
        for listen in ["tcp:8081", "tcp:8081:interface=0.0.0.0"]:
            e = self.assertRaises(
                ConfigError, self.parse, f'[admin]\nlisten = "{listen}"\n'
            )
            self.assertIn("[admin]: listen", str(e))
            self.assertIn("set a token", str(e))

    def test_settings(self) -> None:
        """
        Access log, its format and the state file are read; a bad format or
        an unknown key is an error naming it.
        """
        config = self.parse(
            '[settings]\naccess_log = "-"\naccess_log_format = "json"\n'
            'state_file = "/var/lib/lbtwist/state.json"\n'
        )
        self.assertEqual(
            config.settings,
            SettingsConfig("-", "json", "/var/lib/lbtwist/state.json"),
        )
        e = self.assertRaises(
            ConfigError, self.parse, '[settings]\naccess_log_format = "xml"\n'
        )
        self.assertIn("[settings]: access_log_format", str(e))
        self.assertIn('"xml" is not "combined", "json" or a format string', str(e))
        e = self.assertRaises(ConfigError, self.parse, "[settings]\nacess_log = 1\n")
        self.assertIn('unknown key "acess_log"', str(e))

    def test_quickFormAdmin(self) -> None:
        """
        C{--admin} must be a loopback address in the quick form.
        """
        config = configFromOptions(
            [], ["http://127.0.0.1:9001"], admin="tcp:8081:interface=127.0.0.1"
        )
        self.assertEqual(config.admin, AdminConfig("tcp:8081:interface=127.0.0.1"))
        self.assertRaises(
            ConfigError,
            configFromOptions,
            [],
            ["http://127.0.0.1:9001"],
            admin="tcp:8081",
        )


class TCPModeTests(SynchronousTestCase):
    """
    TCP-mode frontends and pools.
    """

    TCP = (
        '[[frontend]]\nname = "pg"\nlisten = "tcp:5433"\nmode = "tcp"\npool = "pg"\n'
        "accept_proxy = true\n"
        '[[pool]]\nname = "pg"\nstrategy = "least-connections"\nidle_timeout = 30.0\n'
        'send_proxy = "v2"\n'
        '[[pool.backend]]\nurl = "tcp://127.0.0.1:5432"\n'
        '[[pool.backend]]\nurl = "tcp://[::1]:5434"\n'
    )

    def test_tcpPool(self) -> None:
        """
        A pool of C{tcp://} backends is a TCP pool, checked over TCP by
        default, with the TCP keys read.
        """
        config = parseConfig(tomllib.loads(self.TCP))
        [frontend], [pool] = config.frontends, config.pools
        self.assertEqual((frontend.mode, frontend.accept_proxy), ("tcp", True))
        self.assertEqual(pool.mode, "tcp")
        self.assertEqual((pool.idle_timeout, pool.send_proxy), (30.0, "v2"))
        self.assertEqual(pool.health.check, "tcp")
        self.assertEqual(
            [(b.scheme, b.host, b.port, b.address) for b in pool.backends],
            [
                ("tcp", "127.0.0.1", 5432, "127.0.0.1:5432"),
                ("tcp", "::1", 5434, "[::1]:5434"),
            ],
        )

    def test_errors(self) -> None:
        """
        Mixed schemes, a mode that does not match the pool, HTTP checks of
        TCP backends, send_proxy on HTTP pools and a port-less tcp:// URL are
        errors naming where.
        """
        cases = [
            (
                self.TCP.replace(
                    'url = "tcp://[::1]:5434"', 'url = "http://[::1]:5434"'
                ),
                'pool "pg" backend 2: url "http://[::1]:5434": the backends of a pool '
                "must all be http:// or all be tcp://",
            ),
            (
                self.TCP.replace('mode = "tcp"\n', ""),
                'frontend "pg": mode "http" cannot use pool "pg", whose backends are '
                "tcp:// URLs",
            ),
            (
                self.TCP + '[pool.health]\ncheck = "http"\n',
                'pool "pg" health: check "http" needs http:// backends',
            ),
            (
                self.TCP.replace("tcp://127.0.0.1:5432", "tcp://127.0.0.1"),
                'pool "pg" backend 1: url "tcp://127.0.0.1": a tcp:// URL needs a port',
            ),
            (
                self.TCP.replace('send_proxy = "v2"', 'send_proxy = "v3"'),
                'pool "pg": send_proxy "v3" is not one of "none", "v1", "v2"',
            ),
        ]
        for text, message in cases:
            e = self.assertRaises(ConfigError, parseConfig, tomllib.loads(text))
            self.assertEqual(str(e), message)
        http = tomllib.loads(
            '[[frontend]]\nlisten = "tcp:1"\npool = "a"\n[[pool]]\nname = "a"\n'
            'send_proxy = "v1"\n[[pool.backend]]\nurl = "http://127.0.0.1:1"\n'
        )
        e = self.assertRaises(ConfigError, parseConfig, http)
        self.assertEqual(str(e), 'pool "a": send_proxy needs tcp:// backends')

    def test_quickForm(self) -> None:
        """
        C{--mode tcp} takes tcp:// backends; an http:// one is an error.
        """
        config = configFromOptions(
            ["tcp:5433"], ["tcp://127.0.0.1:5432", "tcp://127.0.0.1:5434"], mode="tcp"
        )
        self.assertEqual(config.frontends[0].mode, "tcp")
        self.assertEqual(config.pools[0].mode, "tcp")
        e = self.assertRaises(
            ConfigError, configFromOptions, [], ["http://127.0.0.1:1"], mode="tcp"
        )
        self.assertEqual(
            str(e),
            '--backend 1: "http://127.0.0.1:1" must be a tcp:// URL with --mode tcp',
        )


class FrontendTLSConfigTests(SynchronousTestCase):
    """
    C{[frontend.tls]}: certificates checked at load time, paths relative to
    the configuration file.
    """

    def setUp(self) -> None:
        from tests.test_tls import Certificates

        self.certs = Certificates()
        self.addCleanup(self.certs.cleanUp)
        self.directory = Path(self.certs.directory)

    def load(self, tls: str, mode: str = "http", extra: str = "") -> Config:
        """
        Write a configuration with C{tls} as the body of C{[frontend.tls]}
        next to the certificates and load it.
        """
        scheme = "tcp" if mode == "tcp" else "http"
        path = self.directory / "lbtwist.toml"
        path.write_text(
            f"""
[[frontend]]
name = "https"
listen = "tcp:8443"
pool = "app"
mode = "{mode}"
{extra}
[frontend.tls]
{tls}

[[pool]]
name = "app"
[[pool.backend]]
url = "{scheme}://127.0.0.1:9001"
"""
        )
        return loadConfig(str(path))

    def assertLoadError(self, tls: str, message: str, **kwargs: str) -> None:
        """
        Loading fails with C{message} after the file name.
        """
        error = self.assertRaises(ConfigError, self.load, tls, **kwargs)
        self.assertEqual(error.message, message)

    def test_relativePathsAndDefaults(self) -> None:
        """
        Relative certificate paths start at the file's directory; the
        minimum version is 1.2 and the handshake timeout 10 seconds.
        """
        from lbtwist.config import FrontendTLSConfig

        config = self.load('certificates = ["a.pem", "b.pem"]')
        self.assertEqual(
            config.frontends[0].tls,
            FrontendTLSConfig(
                certificates=(self.certs.aPath, self.certs.bPath),
                min_version="1.2",
                handshake_timeout=10.0,
            ),
        )

    def test_values(self) -> None:
        """
        C{min_version} and C{handshake_timeout} are read; a TCP frontend may
        terminate TLS.
        """
        tls = self.load(
            'certificates = "a.pem"\nmin_version = "1.3"\nhandshake_timeout = 2',
            mode="tcp",
        ).frontends[0].tls
        assert tls is not None
        self.assertEqual((tls.min_version, tls.handshake_timeout), ("1.3", 2.0))

    def test_certificateErrorsNameTheFile(self) -> None:
        """
        A missing file, or a key that is not the certificate's, is an error
        naming the file as written.
        """
        (self.directory / "certs").mkdir()
        (self.directory / "certs" / "m.pem").write_bytes(
            self.certs.b.keyPEM() + self.certs.a.certPEM()
        )
        self.assertLoadError(
            'certificates = ["a.pem", "certs/none.pem"]',
            'frontend "https" tls: certs/none.pem: cannot read: No such file '
            "or directory",
        )
        self.assertLoadError(
            'certificates = ["certs/m.pem"]',
            'frontend "https" tls: certs/m.pem: the private key does not match '
            "the certificate",
        )

    def test_valueErrors(self) -> None:
        """
        Bad values and missing keys are named.
        """
        self.assertLoadError(
            "min_version = 1.2",
            'frontend "https" tls: missing required key "certificates"',
        )
        self.assertLoadError(
            'certificates = []',
            'frontend "https" tls: certificates must not be empty',
        )
        self.assertLoadError(
            'certificates = "a.pem"\nmin_version = "1.1"',
            'frontend "https" tls: min_version "1.1" is not one of "1.2", "1.3"',
        )
        self.assertLoadError(
            'certificates = "a.pem"\nhandshake_timeout = 0',
            'frontend "https" tls: handshake_timeout must be a number greater than 0',
        )
        self.assertLoadError(
            'certificates = "a.pem"\nciphers = "x"',
            'frontend "https" tls: unknown key "ciphers"',
        )

    def test_tcpAcceptProxyWithTLS(self) -> None:
        """
        A TCP frontend cannot both read a PROXY header and terminate TLS.
        """
        self.assertLoadError(
            'certificates = "a.pem"',
            'frontend "https": accept_proxy with tls needs mode "http"',
            mode="tcp",
            extra="accept_proxy = true",
        )


class HTTPSBackendConfigTests(ConfigErrorAssertions):
    """
    C{https://} backends and the pool keys C{ca_file} and C{tls_verify}.
    """

    def test_httpsURL(self) -> None:
        """
        An https URL defaults to port 443; verification is on by default
        with the system trust store.
        """
        config = parseConfig(changed("backend", url="https://App.Internal"))
        pool = config.pools[0]
        backend = pool.backends[1]
        self.assertEqual(
            (backend.scheme, backend.host, backend.port), ("https", "app.internal", 443)
        )
        self.assertEqual((pool.ca_file, pool.tls_verify), (None, True))
        self.assertEqual(pool.mode, "http")
        self.assertTrue(pool.usesTLS)

    def test_caFileAndOptOut(self) -> None:
        """
        C{ca_file} is checked and resolved against the file's directory;
        C{tls_verify} is read.
        """
        from tests.test_tls import Certificates

        certs = Certificates()
        self.addCleanup(certs.cleanUp)
        document = changed(
            "pool", ca_file="ca.pem", tls_verify=False
        )
        document["pool"][0]["backend"][1]["url"] = "https://127.0.0.1:9443"
        source = str(Path(certs.directory) / "lbtwist.toml")
        pool = parseConfig(document, source=source).pools[0]
        self.assertEqual((pool.ca_file, pool.tls_verify), (certs.caPath, False))

    def test_errors(self) -> None:
        """
        TLS keys need https backends; a C{ca_file} must hold certificates.
        """
        https = changed("pool", ca_file="/nonexistent/ca.pem")
        https["pool"][0]["backend"][1]["url"] = "https://127.0.0.1:9443"
        self.assertErrors(
            [
                (
                    changed("pool", ca_file="ca.pem"),
                    'pool "app": ca_file needs https:// backends',
                ),
                (
                    changed("pool", tls_verify=False),
                    'pool "app": tls_verify needs https:// backends',
                ),
                (
                    changed("pool", tls_verify="no"),
                    'pool "app": tls_verify must be true or false',
                ),
                (
                    https,
                    'pool "app" ca_file: /nonexistent/ca.pem: cannot read: No such '
                    "file or directory",
                ),
            ]
        )


class StrategySettingsTests(ConfigErrorAssertions):
    """
    The settings of the strategies that take any: C{hash_key},
    C{hash_balance_factor} and C{ewma_decay}.
    """

    def test_defaults(self) -> None:
        """
        Consistent hashing places by client address with a 125% bound;
        peak-EWMA decays over 10 seconds.
        """
        pool = parseConfig(changed("pool", strategy="consistent-hash")).pools[0]
        self.assertEqual(
            (pool.hash_key, pool.hash_balance_factor, pool.ewma_decay),
            ("client_ip", 125, 10.0),
        )

    def test_accepted(self) -> None:
        """
        Every kind of hash key is accepted, and a factor of 0 turns the
        bound off.
        """
        for key in ("client_ip", "path", "header:X-User", "cookie:sid", "query:u"):
            with self.subTest(key=key):
                document = changed(
                    "pool",
                    strategy="consistent-hash",
                    hash_key=key,
                    hash_balance_factor=0,
                )
                pool = parseConfig(document).pools[0]
                self.assertEqual((pool.hash_key, pool.hash_balance_factor), (key, 0))
        pool = parseConfig(changed("pool", strategy="peak-ewma", ewma_decay=2.5)).pools[0]
        self.assertEqual(pool.ewma_decay, 2.5)

    def test_errors(self) -> None:
        """
        Bad keys, factors below 100, and settings of another strategy are
        refused, naming the pool and the key.
        """
        hashing = {"strategy": "consistent-hash"}
        self.assertErrors(
            [
                (
                    changed("pool", hash_key="ip", **hashing),
                    'pool "app": hash_key "ip" is not one of client_ip, path, '
                    "header:NAME, cookie:NAME, query:NAME",
                ),
                (
                    changed("pool", hash_key="header:", **hashing),
                    'pool "app": hash_key "header:" is not one of client_ip, path, '
                    "header:NAME, cookie:NAME, query:NAME",
                ),
                (
                    changed("pool", hash_key="header:X User", **hashing),
                    'pool "app": hash_key "X User" is not a valid header name',
                ),
                (
                    changed("pool", hash_balance_factor=99, **hashing),
                    'pool "app": hash_balance_factor must be 0 (no bound) or at '
                    "least 100",
                ),
                (
                    changed("pool", hash_key="path"),
                    'pool "app": hash_key needs strategy = "consistent-hash"',
                ),
                (
                    changed("pool", hash_balance_factor=150, strategy="random-two"),
                    'pool "app": hash_balance_factor needs strategy = '
                    '"consistent-hash"',
                ),
                (
                    changed("pool", ewma_decay=5.0, **hashing),
                    'pool "app": ewma_decay needs strategy = "peak-ewma"',
                ),
            ]
        )

    def test_tcpPools(self) -> None:
        """
        A TCP pool can hash only the client address, and cannot measure
        response latency.
        """
        document = {
            "frontend": [
                {"name": "pg", "listen": "tcp:5432", "pool": "db", "mode": "tcp"}
            ],
            "pool": [
                {
                    "name": "db",
                    "strategy": "consistent-hash",
                    "hash_key": "path",
                    "backend": [{"url": "tcp://127.0.0.1:5433"}],
                }
            ],
        }
        self.assertErrors(
            [
                (
                    document,
                    'pool "db": hash_key "path" needs http:// backends; a TCP '
                    "pool can only hash client_ip",
                )
            ]
        )
        document["pool"][0].pop("hash_key")  # type: ignore[index, union-attr]
        self.assertEqual(parseConfig(document).pools[0].hash_key, "client_ip")
        document["pool"][0]["strategy"] = "peak-ewma"  # type: ignore[index]
        self.assertErrors(
            [
                (
                    document,
                    'pool "db": strategy "peak-ewma" needs http:// backends (it '
                    "measures response latency)",
                )
            ]
        )


class StickinessAndSlowStartTests(ConfigErrorAssertions):
    """
    C{sticky_cookie}, C{slow_start}, C{[settings] secret} and
    C{access_log_headers}.
    """

    def test_accepted(self) -> None:
        """
        The keys are read into the pool and the settings.
        """
        document = changed("pool", sticky_cookie="lb", slow_start=30.0)
        document["settings"] = {
            "secret": "0123456789abcdef",
            "access_log_headers": ["X-User", "X-Tenant"],
        }
        config = parseConfig(document)
        self.assertEqual(
            (config.pools[0].sticky_cookie, config.pools[0].slow_start), ("lb", 30.0)
        )
        self.assertEqual(config.settings.secret, "0123456789abcdef")
        self.assertEqual(config.settings.access_log_headers, ("X-User", "X-Tenant"))

    def test_defaults(self) -> None:
        """
        No stickiness, no slow start, no secret, no recorded headers.
        """
        config = parseConfig(minimalDocument())
        self.assertEqual(
            (config.pools[0].sticky_cookie, config.pools[0].slow_start), (None, 0.0)
        )
        self.assertIsNone(config.settings.secret)
        self.assertEqual(config.settings.access_log_headers, ())

    def test_errors(self) -> None:
        """
        A cookie name or header name that is not a token, a short secret, a
        negative slow start and a sticky TCP pool are refused.
        """
        short = minimalDocument()
        short["settings"] = {"secret": "short"}
        header = minimalDocument()
        header["settings"] = {"access_log_headers": ["X User"]}
        tcp = {
            "frontend": [
                {"name": "pg", "listen": "tcp:5432", "pool": "db", "mode": "tcp"}
            ],
            "pool": [
                {
                    "name": "db",
                    "sticky_cookie": "lb",
                    "backend": [{"url": "tcp://127.0.0.1:5433"}],
                }
            ],
        }
        self.assertErrors(
            [
                (
                    changed("pool", sticky_cookie="l b"),
                    'pool "app": sticky_cookie "l b" is not a valid cookie name',
                ),
                (
                    changed("pool", slow_start=-1.0),
                    'pool "app": slow_start must be a number >= 0',
                ),
                (short, "[settings]: secret must be at least 16 characters"),
                (
                    header,
                    '[settings]: access_log_headers "X User" is not a header name',
                ),
                (tcp, 'pool "db": sticky_cookie needs http:// backends'),
            ]
        )


ROUTED = """
[[frontend]]
name = "web"
listen = "tcp:8080"
pool = "static"
request_id = true

[frontend.request_headers]
set = { "X-Env" = "prod" }
add = { "X-Trace" = "{request_id}" }
remove = ["X-Debug"]

[frontend.response_headers]
set = { "Strict-Transport-Security" = "max-age=31536000" }
remove = ["Server"]

[[frontend.route]]
host = ["API.example.com", "*.example.org"]
path_prefix = "/v1/"
methods = ["GET", "HEAD"]
headers = { "X-Canary" = "1" }
pool = "api"
strip_prefix = true

[frontend.route.request_headers]
set = { "X-Route" = "api {host}" }

[[frontend.route]]
host = ["old.example.com"]
redirect = "https://new.example.com{path}"
redirect_status = 308

[[frontend]]
name = "tls"
listen = "tcp:8443"
mode = "tcp"

[[frontend.route]]
sni = ["a.example", "*.b.example"]
pool = "tlsa"

[[pool]]
name = "static"
[[pool.backend]]
url = "http://127.0.0.1:9001"

[[pool]]
name = "api"
[[pool.backend]]
url = "http://127.0.0.1:9002"

[[pool]]
name = "tlsa"
[[pool.backend]]
url = "tcp://127.0.0.1:9443"
"""


class RouteConfigTests(ConfigErrorAssertions):
    """
    C{[[frontend.route]]}, header rules and C{request_id}.
    """

    def parse(self, text: str = ROUTED) -> Config:
        return parseConfig(tomllib.loads(text))

    def test_parsed(self) -> None:
        """
        Routes keep file order and every key; host names are lower-cased;
        a TCP frontend's routes carry SNI names; a frontend with routes
        needs no pool.
        """
        web, tls = self.parse().frontends
        api, old = web.routes
        self.assertEqual(
            api,
            RouteConfig(
                host=("api.example.com", "*.example.org"),
                path_prefix="/v1/",
                methods=("GET", "HEAD"),
                headers=(("x-canary", "1"),),
                pool="api",
                strip_prefix=True,
                request_headers=HeaderRules(set=(("X-Route", "api {host}"),)),
            ),
        )
        self.assertEqual(
            old,
            RouteConfig(
                host=("old.example.com",),
                redirect="https://new.example.com{path}",
                redirect_status=308,
            ),
        )
        self.assertEqual(
            web.request_headers,
            HeaderRules(
                set=(("X-Env", "prod"),),
                add=(("X-Trace", "{request_id}"),),
                remove=("X-Debug",),
            ),
        )
        self.assertEqual(web.response_headers.remove, ("Server",))
        self.assertTrue(web.request_id)
        self.assertEqual(web.pools, ("static", "api"))
        self.assertIsNone(tls.pool)
        self.assertEqual(tls.routes, (RouteConfig(sni=("a.example", "*.b.example"), pool="tlsa"),))
        self.assertEqual(tls.pools, ("tlsa",))

    def test_errors(self) -> None:
        """
        A route naming an unknown pool, a bad regex, a route with neither
        pool nor redirect, hop-by-hop fields in rules, unknown placeholders
        and keys of the other mode are refused, naming the route and key.
        """
        cases = [
            ('pool = "api"\n', 'pool = "nope"\n', 'frontend "web" route 1: pool "nope" is not defined (pools: "static", "api", "tlsa")'),
            ('path_prefix = "/v1/"\n', 'path_regex = "("\n', 'frontend "web" route 1: path_regex "(" is not a valid regular expression: missing ), unterminated subpattern at position 0'),
            ('redirect = "https://new.example.com{path}"\n', '', 'frontend "web" route 2: a route needs either pool or redirect'),
            ('remove = ["X-Debug"]\n', 'remove = ["Connection"]\n', 'frontend "web" request_headers: remove cannot touch "Connection": hop-by-hop and framing fields are lbtwist\'s to write'),
            ('set = { "X-Env" = "prod" }\n', 'set = { "Transfer-Encoding" = "chunked" }\n', 'frontend "web" request_headers: set cannot touch "Transfer-Encoding": hop-by-hop and framing fields are lbtwist\'s to write'),
            ('"api {host}"', '"api {port}"', 'frontend "web" route 1 request_headers: set "api {port}" has unknown placeholder "{port}" (placeholders: {client_ip}, {request_id}, {scheme}, {host})'),
            ('"https://new.example.com{path}"', '"https://new.example.com{query}"', 'frontend "web" route 2: redirect "https://new.example.com{query}" has unknown placeholder "{query}" (placeholders: {scheme}, {host}, {path})'),
            ('redirect_status = 308\n', 'redirect_status = 200\n', 'frontend "web" route 2: redirect_status must be 301, 302, 307 or 308'),
            ('sni = ["a.example", "*.b.example"]\n', 'host = ["a.example"]\n', 'frontend "tls" route 1: host needs mode = "http"'),
            ('methods = ["GET", "HEAD"]\n', 'methods = ["GET", "HEAD"]\nsni = ["x.example"]\n', 'frontend "web" route 1: sni needs mode = "tcp" (an HTTP route matches host)'),
            ('request_id = true\n', '', 'frontend "web": {request_id} in a header rule needs request_id = true'),
            ('host = ["old.example.com"]\n', 'host = ["old.example.com:80"]\n', 'frontend "web" route 2: host "old.example.com:80" has a port; the port is ignored when matching'),
            ('host = ["old.example.com"]\n', 'host = ["bad_name"]\n', 'frontend "web" route 2: host "bad_name" is not a host name or *.name'),
            ('pool = "tlsa"\n', 'pool = "api"\n', 'frontend "tls" route 1: mode "tcp" cannot use pool "api", whose backends are http:// URLs'),
        ]
        documents = []
        for old, new, message in cases:
            self.assertIn(old, ROUTED)
            documents.append((tomllib.loads(ROUTED.replace(old, new, 1)), message))
        self.assertErrors(documents)

    def test_moreRefusals(self) -> None:
        """
        A path prefix that is not normalised (it would never match), a
        wildcard over an address, removing C{Host}, and C{{request_id}} in
        a response rule without C{request_id = true} are refused.
        """
        cases = [
            ('path_prefix = "/v1/"\n', 'path_prefix = "/a/../v1/"\n', 'frontend "web" route 1: path_prefix "/a/../v1/" would never match: paths are matched normalised (write "/v1/")'),
            ('path_prefix = "/v1/"\n', 'path_prefix = "/%2e/"\n', 'frontend "web" route 1: path_prefix "/%2e/" would never match: paths are matched normalised (write "/")'),
            ('path_prefix = "/v1/"\n', 'path_prefix = "/v%/"\n', 'frontend "web" route 1: path_prefix "/v%/" has a "%" that is not followed by two hex digits'),
            ('host = ["old.example.com"]\n', 'host = ["*.10.0.0.1"]\n', 'frontend "web" route 2: host "*.10.0.0.1": a wildcard needs a host name, not an address'),
            ('remove = ["X-Debug"]\n', 'remove = ["host"]\n', 'frontend "web" request_headers: remove cannot remove "Host" (set may replace it)'),
            ('request_id = true\n', '', 'frontend "web": {request_id} in a header rule needs request_id = true'),
        ]
        documents = []
        for old, new, message in cases:
            self.assertIn(old, ROUTED)
            text = ROUTED.replace(old, new, 1)
            if not new:
                text = text.replace('add = { "X-Trace" = "{request_id}" }\n', "")
                text = text.replace('remove = ["Server"]\n', 'remove = ["Server"]\nadd = { "X-ID" = "{request_id}" }\n')
            documents.append((tomllib.loads(text), message))
        self.assertErrors(documents)

    def test_readmeRoutingExample(self) -> None:
        """
        The README's routing example (API + static + redirect from http to
        https) is a valid configuration (its certificate aside) and means
        what the README says.
        """
        readme = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.rst")
        with open(readme, encoding="utf-8") as f:
            section = f.read().split("\nRouting\n-------\n", 1)[1]
        block = section.split(".. code-block:: toml\n\n", 1)[1].split("\n\n``", 1)[0]
        text = "\n".join(line[4:] for line in block.splitlines())
        text = text.replace(
            '[frontend.tls]\ncertificates = ["/etc/lbtwist/example.com.pem"]\n', ""
        )
        http, https = parseConfig(tomllib.loads(text)).frontends
        self.assertEqual((http.pool, http.routes[0].redirect_status), (None, 308))
        self.assertEqual(https.pools, ("app", "api", "static"))
        self.assertTrue(https.routes[1].strip_prefix)

    def test_poolRequiredWithoutRoutes(self) -> None:
        """
        A frontend without routes still needs a pool.
        """
        document = minimalDocument()
        del document["frontend"][0]["pool"]
        self.assertErrors([(document, 'frontend "web": missing required key "pool"')])

    def test_stripPrefixNeedsPrefix(self) -> None:
        """
        C{strip_prefix} without C{path_prefix}, and both path keys, are
        refused.
        """
        self.assertErrors(
            [
                (
                    tomllib.loads(ROUTED.replace('path_prefix = "/v1/"\n', "")),
                    'frontend "web" route 1: strip_prefix needs path_prefix',
                ),
                (
                    tomllib.loads(
                        ROUTED.replace(
                            'path_prefix = "/v1/"\n',
                            'path_prefix = "/v1/"\npath_regex = "^/v"\n',
                        )
                    ),
                    'frontend "web" route 1: path_prefix and path_regex exclude each other',
                ),
            ]
        )


class ConnectionLimitTests(ConfigErrorAssertions):
    """
    C{max_connections} per backend, C{max_queue} and C{queue_timeout} per
    pool.
    """

    def test_defaults(self) -> None:
        """
        Without them, backends have no limit; a pool's queue holds 1000
        requests for 5 seconds at most.
        """
        pool = parseConfig(minimalDocument()).pools[0]
        self.assertEqual([b.max_connections for b in pool.backends], [None, None])
        self.assertEqual((pool.max_queue, pool.queue_timeout), (1000, 5.0))

    def test_values(self) -> None:
        """
        The values given are kept; C{max_queue = 0} means no queue.
        """
        document = changed("backend", max_connections=20)
        document["pool"][0].update(max_queue=0, queue_timeout=1)
        pool = parseConfig(document).pools[0]
        self.assertEqual([b.max_connections for b in pool.backends], [None, 20])
        self.assertEqual((pool.max_queue, pool.queue_timeout), (0, 1.0))

    def test_errors(self) -> None:
        """
        Bad values, and queue settings in a pool without limits (they would
        be ignored), are refused, naming the key.
        """
        withLimit = changed("backend", max_connections=2)
        negativeQueue = copy.deepcopy(withLimit)
        negativeQueue["pool"][0]["max_queue"] = -1
        zeroTimeout = copy.deepcopy(withLimit)
        zeroTimeout["pool"][0]["queue_timeout"] = 0
        self.assertErrors(
            [
                (
                    changed("backend", max_connections=0),
                    'pool "app" backend 2: max_connections must be a positive '
                    "integer",
                ),
                (
                    changed("backend", max_connections=True),
                    'pool "app" backend 2: max_connections must be a positive '
                    "integer",
                ),
                (negativeQueue, 'pool "app": max_queue must be an integer >= 0'),
                (
                    zeroTimeout,
                    'pool "app": queue_timeout must be a number greater than 0',
                ),
                (
                    changed("pool", max_queue=10),
                    'pool "app": max_queue needs max_connections on a backend '
                    "(without a limit nothing ever waits)",
                ),
                (
                    changed("pool", queue_timeout=1.0),
                    'pool "app": queue_timeout needs max_connections on a '
                    "backend (without a limit nothing ever waits)",
                ),
            ]
        )

    def test_quickForm(self) -> None:
        """
        The quick form takes C{,max_connections=N}.
        """
        backend = parseBackendSpec("http://127.0.0.1:9001,max_connections=8", 1)
        self.assertEqual(backend.max_connections, 8)
