"""
Measure lbtwist's memory while a slow client downloads 1 GiB through it.

Starts a real C{twistd -n lbtwist} (the checkout's code) in front of the test
suite's scripted backend, reads 64 KiB every 10 ms for 15 seconds, then the
rest as fast as possible, sampling lbtwist's RSS. Run from the checkout:

    python docs/measure_slow_client.py
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.harness import Lbtwist, ScriptedBackend, webConfig

class Owner:
    def addCleanup(self, f, *a, **k): cleanups.append((f, a, k))
cleanups = []
backend = ScriptedBackend("b1")
lb = Lbtwist(Owner(), webConfig([backend]))
# warm up
s = socket.create_connection(("127.0.0.1", lb.port)); s.sendall(b"GET /warm HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
while s.recv(65536): pass
s.close()
base = lb.rss(); peak = base
s = socket.create_connection(("127.0.0.1", lb.port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.sendall(b"GET /script/big?mb=1024 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
total = 0; t0 = time.time()
while time.time() - t0 < 15:          # slow phase: 64 KiB every 10 ms
    total += len(s.recv(65536)); time.sleep(0.01); peak = max(peak, lb.rss())
slow = total
t1 = time.time()
while True:
    d = s.recv(1 << 20)
    if not d: break
    total += len(d)
    if total % (64 << 20) < (1 << 20): peak = max(peak, lb.rss())
print(f"baseline RSS {base} KiB; peak {peak} KiB (+{peak-base} KiB); slow phase read {slow/2**20:.1f} MiB in 15 s; "
      f"total bytes {total} (1 GiB body + head); fast phase {(total-slow)/2**20/(time.time()-t1):.0f} MiB/s")
for f, a, k in reversed(cleanups): f(*a, **k)
backend.close()
