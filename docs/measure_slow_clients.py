"""
Measure lbtwist's memory and file descriptors under many slow clients.

Starts a real C{twistd -n lbtwist} (the checkout's code, via the test
harness, so C{PYTHONPATH} points at the project root) in front of a small
threaded backend on loopback, and runs two scenarios, sampling lbtwist's RSS
(C{VmRSS} in C{/proc/PID/status}) and open descriptors (C{/proc/PID/fd})
every 0.2 s:

  (a) 300 slow uploaders: C{POST /up} with C{Content-Length: 100000}, then
      one body byte every 2 s. The frontend uses the default C{body_timeout
      = 60} and C{min_body_rate = 1024}, checked over 10 s windows, so each
      should be cut off (408 or close) about 10 s after its head.
  (b) 300 slow readers: C{GET /big} (10 MiB with Content-Length), then read
      1 KiB every 0.5 s for 10 s and close.

For each it prints RSS and descriptor counts before, at peak and 3 s after
the clients are gone. Loopback only, no third-party packages, bounded
(about 35 s; a watchdog aborts at 75 s). Run from the checkout:

    python docs/measure_slow_clients.py
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.harness import Lbtwist, simpleConfig  # noqa: E402

CLIENTS = 300
UPLOAD_LENGTH = 100_000
UPLOAD_INTERVAL = 2.0
UPLOAD_DEADLINE = 20.0  # give up waiting for cut-offs after this long
BIG = 10 * 1024 * 1024
READ_SIZE = 1024
READ_INTERVAL = 0.5
READ_DURATION = 10.0
SAMPLE_INTERVAL = 0.2
SETTLE = 3.0
RSS_LIMIT_KIB = 4 * 1024 * 1024  # abort a scenario if lbtwist passes 4 GiB
WATCHDOG = 100


# --------------------------------------------------------------------------
# Backend


class Backend:
    """
    A threaded HTTP/1.1 server on 127.0.0.1: C{/big} is 10 MiB with
    Content-Length; anything else reads the request body (Content-Length)
    and answers a short 200.
    """

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.closed:
                    sock.close()
                    return
                self.open.add(sock)
            sock.settimeout(90)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                target = lines[0].split(b" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buffer) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                buffer = buffer[length:]
                if target == b"/big":
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream"
                        b"\r\nContent-Length: %d\r\n\r\n" % BIG
                    )
                    block = bytes(range(256)) * 256
                    for _ in range(BIG // len(block)):
                        sock.sendall(block)
                else:
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (OSError, ValueError, IndexError):
            return
        finally:
            with self.lock:
                self.open.discard(sock)
            sock.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            socks = list(self.open)
            self.open.clear()
        try:
            self.listener.close()
        except OSError:
            pass
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


# --------------------------------------------------------------------------
# Sampling


def rssKiB(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fdCount(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """
    Samples RSS and descriptors every 0.2 s in a thread; keeps the peaks.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peakRss = rssKiB(pid)
        self.peakFds = fdCount(pid)
        self.samples = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(SAMPLE_INTERVAL):
            try:
                self.peakRss = max(self.peakRss, rssKiB(self.pid))
                self.peakFds = max(self.peakFds, fdCount(self.pid))
                self.samples += 1
            except OSError:
                return

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(2)


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def settle(pid: int, sampler: Sampler) -> tuple[int, int]:
    time.sleep(SETTLE)
    sampler.stop()
    return rssKiB(pid), fdCount(pid)


def report(name: str, before: tuple[int, int], sampler: Sampler, after: tuple[int, int]) -> None:
    (rss0, fd0), (rss1, fd1) = before, after
    print(
        f"[{name}] RSS before {rss0} KiB ({mib(rss0)}), peak {sampler.peakRss} KiB "
        f"({mib(sampler.peakRss)}, +{mib(sampler.peakRss - rss0)}), "
        f"3 s after {rss1} KiB ({mib(rss1)}, {rss1 - rss0:+d} KiB vs before)"
    )
    print(
        f"[{name}] fds before {fd0}, peak {sampler.peakFds}, 3 s after {fd1} "
        f"({fd1 - fd0:+d} vs before); {sampler.samples} samples"
    )
    nearRss = rss1 - rss0 <= max(5 * 1024, rss0 // 10)
    print(
        f"[{name}] RSS returned near baseline (within max(5 MiB, 10%)): "
        f"{'yes' if nearRss else 'NO'}; fds returned to baseline: "
        f"{'yes' if fd1 <= fd0 else 'NO'}"
    )


# --------------------------------------------------------------------------
# Clients


def connectAll(port: int, count: int, opened: list[socket.socket]) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        opened.append(sock)
        socks.append(sock)
    return socks


def closeAll(socks: list[socket.socket]) -> None:
    for sock in socks:
        try:
            sock.close()
        except OSError:
            pass


def slowUploaders(lb: Lbtwist, opened: list[socket.socket]) -> None:
    pid = lb.process.pid
    before = (rssKiB(pid), fdCount(pid))
    sampler = Sampler(pid)
    socks = connectAll(lb.port, CLIENTS, opened)
    head = (
        b"POST /up HTTP/1.1\r\nHost: lb.example\r\nContent-Type: application/octet-stream"
        b"\r\nContent-Length: %d\r\n\r\n" % UPLOAD_LENGTH
    )
    selector = selectors.DefaultSelector()
    start = {}
    nextByte = {}
    ended: dict[socket.socket, tuple[float, str]] = {}
    for i, sock in enumerate(socks):
        sock.sendall(head)
        sock.setblocking(False)
        now = time.monotonic()
        start[sock] = now
        # Stagger the first body byte over the first interval.
        nextByte[sock] = now + UPLOAD_INTERVAL * i / CLIENTS
        selector.register(sock, selectors.EVENT_READ)
    t0 = min(start.values())
    got = {sock: b"" for sock in socks}
    sent = 0

    def end(sock: socket.socket, how: str) -> None:
        if sock in ended:
            return
        ended[sock] = (time.monotonic() - start[sock], how)
        selector.unregister(sock)

    try:
        while len(ended) < CLIENTS and time.monotonic() - t0 < UPLOAD_DEADLINE:
            if sampler.peakRss > RSS_LIMIT_KIB:
                print("[a] aborting: lbtwist RSS above the 4 GiB safety limit")
                break
            now = time.monotonic()
            for sock in socks:
                if sock not in ended and nextByte[sock] <= now:
                    try:
                        sock.send(b"x")
                        sent += 1
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        end(sock, "send " + errno.errorcode.get(e.errno or 0, str(e)))
                        continue
                    nextByte[sock] += UPLOAD_INTERVAL
            for key, _ in selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    end(sock, "reset")
                    continue
                if not data:
                    status = got[sock][9:12].decode("latin-1") if got[sock] else ""
                    end(sock, f"{status} then close" if status else "close, no response")
                    continue
                got[sock] += data
                if b"\r\n" in got[sock] and sock not in ended:
                    # A response while the body is unfinished: record it now.
                    status = got[sock][9:12].decode("latin-1")
                    end(sock, status)
    finally:
        selector.close()
        gone = time.monotonic()
        closeAll(socks)
    after = settle(pid, sampler)
    times = sorted(t for t, _ in ended.values())
    kinds: dict[str, int] = {}
    for _, how in ended.values():
        kinds[how] = kinds.get(how, 0) + 1
    print(
        f"[a] {CLIENTS} slow uploaders (Content-Length {UPLOAD_LENGTH}, 1 byte / "
        f"{UPLOAD_INTERVAL:g} s; body_timeout 60, min_body_rate 1024); "
        f"{sent} body bytes sent in total"
    )
    print(
        f"[a] cut off by lbtwist: {len(ended)}/{CLIENTS} within "
        f"{gone - t0:.1f} s; how: {dict(sorted(kinds.items()))}"
    )
    if times:
        print(
            f"[a] cut-off time after each client's head: min {times[0]:.2f} s, "
            f"median {statistics.median(times):.2f} s, max {times[-1]:.2f} s"
        )
    if len(ended) < CLIENTS:
        print(f"[a] NOT cut off: {CLIENTS - len(ended)} (closed by this script)")
    report("a", before, sampler, after)


def slowReaders(lb: Lbtwist, opened: list[socket.socket]) -> None:
    pid = lb.process.pid
    before = (rssKiB(pid), fdCount(pid))
    sampler = Sampler(pid)
    socks = connectAll(lb.port, CLIENTS, opened)
    for sock in socks:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: lb.example\r\n\r\n")
        sock.setblocking(False)
    t0 = time.monotonic()
    received = {sock: 0 for sock in socks}
    ended: dict[socket.socket, str] = {}
    statuses: dict[str, int] = {}
    first = {sock: True for sock in socks}
    try:
        tick = t0
        while time.monotonic() - t0 < READ_DURATION:
            if sampler.peakRss > RSS_LIMIT_KIB:
                print("[b] aborting: lbtwist RSS above the 4 GiB safety limit")
                break
            for sock in socks:
                if sock in ended:
                    continue
                try:
                    data = sock.recv(READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError as e:
                    ended[sock] = errno.errorcode.get(e.errno or 0, str(e))
                    continue
                if not data:
                    ended[sock] = "eof"
                    continue
                if first[sock]:
                    first[sock] = False
                    status = data[9:12].decode("latin-1")
                    statuses[status] = statuses.get(status, 0) + 1
                received[sock] += len(data)
            tick += READ_INTERVAL
            time.sleep(max(0.0, tick - time.monotonic()))
    finally:
        closeAll(socks)
    after = settle(pid, sampler)
    total = sum(received.values())
    print(
        f"[b] {CLIENTS} slow readers of a {BIG // 1024 // 1024} MiB response, "
        f"{READ_SIZE} B every {READ_INTERVAL:g} s for {READ_DURATION:g} s; statuses "
        f"{statuses}; read {total} bytes in total "
        f"(min {min(received.values())}, max {max(received.values())} per client); "
        f"ended early: {len(ended)} {sorted(set(ended.values()))}"
    )
    report("b", before, sampler, after)


# --------------------------------------------------------------------------


class _Owner:
    def __init__(self) -> None:
        self.cleanups: list = []

    def addCleanup(self, f, *a, **k) -> None:
        self.cleanups.append((f, a, k))

    def cleanUp(self) -> None:
        for f, a, k in reversed(self.cleanups):
            try:
                f(*a, **k)
            except Exception as e:  # keep cleaning
                print(f"cleanup {f!r} failed: {e!r}", file=sys.stderr)


def _watchdog(signum, frame):
    raise TimeoutError(f"measurement took longer than {WATCHDOG} s")


def main() -> int:
    signal.signal(signal.SIGALRM, _watchdog)
    signal.alarm(WATCHDOG)
    owner = _Owner()
    backend = Backend()
    opened: list[socket.socket] = []
    began = time.monotonic()
    try:
        lb = Lbtwist(
            owner,
            simpleConfig(
                [backend.port],
                frontend={"body_timeout": 60.0, "min_body_rate": 1024},
                pool={"response_timeout": 60.0},
            ),
        )
        pid = lb.process.pid
        # Warm up: one small request and one /big, read through.
        for target in (b"/warm", b"/big"):
            with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as s:
                s.sendall(
                    b"GET " + target + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                )
                while s.recv(1 << 20):
                    pass
        time.sleep(1)
        print(
            f"lbtwist pid {pid} on 127.0.0.1:{lb.port}, backend 127.0.0.1:{backend.port}; "
            f"after warm-up RSS {rssKiB(pid)} KiB, {fdCount(pid)} fds"
        )
        slowUploaders(lb, opened)
        slowReaders(lb, opened)
        # A second round: what the allocator kept from the first is reused,
        # so memory that was really leaked would show here as new growth.
        print("[b] again, against the same lbtwist:")
        slowReaders(lb, opened)
        if lb.process.poll() is not None:
            print(f"lbtwist exited with {lb.process.returncode}")
        problems = [
            line for line in lb.lines
            if "Traceback" in line or "Unhandled" in line or "CRITICAL" in line
        ]
        if problems:
            print(f"lbtwist logged {len(problems)} error lines, first: {problems[0]}")
        print(f"total run time {time.monotonic() - began:.1f} s")
        return 0
    finally:
        signal.alarm(0)
        closeAll(opened)
        owner.cleanUp()
        backend.close()


if __name__ == "__main__":
    sys.exit(main())
