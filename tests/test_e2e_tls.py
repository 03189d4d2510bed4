# -*- test-case-name: tests.test_e2e_tls -*-
"""
End-to-end TLS through C{twistd -n lbtwist}: an HTTPS frontend choosing its
certificate by SNI, and C{https://} backends verified (or not) as the pool
says.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import Lbtwist, ScriptedBackend, exchange, parseResponses, request
from tests.test_tls import Certificates


def _httpsGet(
    port: int, serverName: str, caFile: str, target: str = "/"
) -> tuple[x509.Certificate, bytes]:
    """
    GET C{target} from lbtwist over TLS with Python's C{ssl} client,
    verifying the certificate for C{serverName}.

    @return: The certificate lbtwist presented, and everything it sent.
    """
    context = ssl.create_default_context(cafile=caFile)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=serverName) as sock:
            der = sock.getpeercert(binary_form=True)
            assert der is not None
            sock.sendall(request("GET", target, host=serverName, close=True))
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
    return x509.load_der_x509_certificate(der), received


def _commonName(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


class TLSBackend:
    """
    A tiny HTTPS server on 127.0.0.1 (Python's C{ssl}, one thread a
    connection) answering every request with 200 C{"tls backend"}.
    """

    def __init__(
        self, addCleanup: Callable[[Callable[[], object]], object], certificatePEM: str
    ) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificatePEM)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        addCleanup(self.listener.close)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            with self.context.wrap_socket(raw, server_side=True) as sock:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                body = b"tls backend"
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (len(body), body)
                )
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()


class HTTPSFrontendTests(SynchronousTestCase):
    """
    A frontend with C{[frontend.tls]} and two certificates.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.certs = Certificates()
        cls.addClassCleanup(cls.certs.cleanUp)
        cls.backend = ScriptedBackend("app")
        cls.addClassCleanup(cls.backend.stop)
        config = f"""
[[frontend]]
name = "https"
listen = "tcp:0:interface=127.0.0.1"
pool = "app"
[frontend.tls]
certificates = ["{cls.certs.aPath}", "{cls.certs.bPath}"]
handshake_timeout = 1.0

[[frontend]]
name = "tcps"
mode = "tcp"
listen = "tcp:0:interface=127.0.0.1"
pool = "raw"
[frontend.tls]
certificates = ["{cls.certs.bPath}"]

[[pool]]
name = "app"
[pool.health]
check = "none"
[[pool.backend]]
url = "{cls.backend.url}"

[[pool]]
name = "raw"
[pool.health]
check = "none"
[[pool.backend]]
url = "tcp://{cls.backend.address}"
"""
        cls.lb = Lbtwist(cls, config)

    def test_certificateChosenBySNI(self) -> None:
        """
        Each server name gets the certificate that covers it, wildcards
        included, verified by a standard client.
        """
        port = self.lb.ports["https"]
        for name, expected in [
            ("a.example", "a.example"),
            ("www.a.example", "a.example"),
            ("shop.b.example", "*.b.example"),
        ]:
            with self.subTest(name=name):
                cert, _ = _httpsGet(port, name, self.certs.caPath)
                self.assertEqual(_commonName(cert), expected)

    def test_forwardedProtoIsHTTPS(self) -> None:
        """
        A request that arrived over TLS reaches the backend with
        C{X-Forwarded-Proto: https}.
        """
        _, received = _httpsGet(
            self.lb.ports["https"], "a.example", self.certs.caPath, "/script/echo"
        )
        [response] = parseResponses(received)
        self.assertEqual(response.status, 200)
        self.assertIn(b"\r\nX-Forwarded-Proto: https\r\n", response.body)

    def test_tcpFrontendTerminatesTLS(self) -> None:
        """
        A TCP frontend with TLS relays the decrypted bytes.
        """
        _, received = _httpsGet(
            self.lb.ports["tcps"], "x.b.example", self.certs.caPath, "/tcp"
        )
        [response] = parseResponses(received)
        self.assertEqual(response.status, 200)
        self.assertIn(b"GET /tcp", response.body)

    def test_stalledHandshakeClosed(self) -> None:
        """
        A connection that sends nothing is closed after C{handshake_timeout}.
        """
        data, how = exchange(self.lb.ports["https"], b"", timeout=5.0)
        self.assertEqual(data, b"")
        self.assertIn(how, ("eof", "reset"))
        self.lb.waitForLine("no TLS handshake within 1.0 seconds")

    def test_plainHTTPRefused(self) -> None:
        """
        Plain HTTP on the TLS port gets no HTTP response.
        """
        data, how = exchange(self.lb.ports["https"], request(close=True))
        self.assertNotIn(b"HTTP/1.1", data)


class HTTPSBackendTests(SynchronousTestCase):
    """
    Pools of C{https://} backends: verified with a C{ca_file}, failing closed
    on a wrong name or an expired certificate, and the logged opt-out.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.certs = Certificates()
        cls.addClassCleanup(cls.certs.cleanUp)
        # a.example and 127.0.0.1; the expired one is for 127.0.0.1 too.
        valid = TLSBackend(cls.addClassCleanup, cls.certs.aPath)
        expired = TLSBackend(cls.addClassCleanup, cls.certs.oldPath)
        ca = cls.certs.caPath
        pools = [
            ("ok", f"https://127.0.0.1:{valid.port}", f'ca_file = "{ca}"'),
            ("wrongname", f"https://localhost:{valid.port}", f'ca_file = "{ca}"'),
            ("expired", f"https://127.0.0.1:{expired.port}", f'ca_file = "{ca}"'),
            ("noverify", f"https://127.0.0.1:{expired.port}", "tls_verify = false"),
            ("untrusted", f"https://127.0.0.1:{valid.port}", ""),
        ]
        text = []
        for name, url, extra in pools:
            text.append(f"""
[[frontend]]
name = "{name}"
listen = "tcp:0:interface=127.0.0.1"
pool = "{name}"

[[pool]]
name = "{name}"
retries = 0
connect_timeout = 2.0
{extra}
[pool.health]
check = "none"
[[pool.backend]]
url = "{url}"
""")
        cls.lb = Lbtwist(cls, "".join(text))

    def get(self, frontend: str) -> int:
        """
        @return: The status of a GET through C{frontend}.
        """
        data, _ = exchange(self.lb.ports[frontend], request(close=True))
        [response] = parseResponses(data)
        return response.status

    def test_verifiedWithCAFile(self) -> None:
        """
        A certificate issued by the pool's C{ca_file} for the URL's host
        (an IP address here) is accepted.
        """
        self.assertEqual(self.get("ok"), 200)

    def test_wrongHostName(self) -> None:
        """
        A valid certificate for another name is a 502 and a logged reason.
        """
        mark = self.lb.mark()
        self.assertEqual(self.get("wrongname"), 502)
        self.lb.waitForLine("TLS: certificate does not match host name", since=mark)

    def test_expired(self) -> None:
        """
        An expired certificate is a 502 and a logged reason.
        """
        mark = self.lb.mark()
        self.assertEqual(self.get("expired"), 502)
        self.lb.waitForLine("TLS: certificate verify failed", since=mark)

    def test_systemTrustStoreDoesNotKnowTestCA(self) -> None:
        """
        Without a C{ca_file}, the system trust store is used: it does not
        trust the test CA, so the request fails closed.
        """
        self.assertEqual(self.get("untrusted"), 502)

    def test_noVerifyOptOut(self) -> None:
        """
        C{tls_verify = false} accepts even an expired certificate, and the
        opt-out was logged at startup naming the pool.
        """
        self.assertEqual(self.get("noverify"), 200)
        self.lb.waitForLine(r"pool noverify: tls_verify = false")
