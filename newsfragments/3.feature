Graceful shutdown: on SIGTERM lbtwist stops accepting, closes idle keep-alive connections, lets in-flight requests and tunnels finish within ``[settings] grace_period`` (default 10 s), then exits.
