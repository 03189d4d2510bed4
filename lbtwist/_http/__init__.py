"""
lbtwist's own HTTP/1.1 data path, on llhttp (the C{httptools} package).

Everything in this package is private to lbtwist:

  - L{lbtwist._http.interfaces}: the seams (what a proxy resource needs from
    a client's request, what an upstream response is told to);
  - L{lbtwist._http.server}: the downstream (client-facing) channel;
  - L{lbtwist._http.client}: the upstream connections and their keep-alive
    pools;
  - L{lbtwist._http.headers}: the hop-by-hop and forwarding header policy;
  - L{lbtwist._http.errors}: lbtwist's own short error responses.

Imports run one way: nothing here imports L{lbtwist.web},
L{lbtwist.attempts} or L{lbtwist.accesslog}.
"""
