# -*- test-case-name: tests.test_main -*-
"""
lbtwist's command line tools: C{python -m lbtwist check FILE},
C{python -m lbtwist simulate FILE} (see L{lbtwist.simulate}) and
C{python -m lbtwist --version}.

The balancer itself runs under C{twistd -n lbtwist}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lbtwist.config import ConfigError, loadConfig
from lbtwist.tap import versionLine

__all__ = ["check", "main", "simulate"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lbtwist",
        description="lbtwist tools (the balancer runs as: twistd -n lbtwist).",
    )
    parser.add_argument(
        "--version", action="version", version=versionLine(), help="print the version"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="validate a configuration file",
        description="Validate a configuration file; exit 0 if it is valid, else 1.",
    )
    check.add_argument("file", metavar="FILE", help="the TOML configuration file")
    simulate = commands.add_parser(
        "simulate",
        help="run a configuration's pools against simulated backends",
        description=(
            "Run every pool of a configuration with lbtwist's own strategies "
            "on a simulated clock against simulated backends, and print per "
            "strategy how requests spread, the latency clients saw and what "
            "failed.  The same seed prints the same report."
        ),
    )
    simulate.add_argument("file", metavar="FILE", help="the TOML configuration file")
    simulate.add_argument(
        "--requests", type=int, default=100000, help="requests to simulate (100000)"
    )
    simulate.add_argument(
        "--rate", type=float, default=2000.0, help="arrivals per second (2000)"
    )
    simulate.add_argument(
        "--clients", type=int, default=1000, help="distinct clients (keys) (1000)"
    )
    simulate.add_argument("--seed", type=int, default=1, help="random seed (1)")
    simulate.add_argument(
        "--strategy",
        action="append",
        default=[],
        metavar="NAME",
        help="a strategy to run (repeat, or 'all'); default: each pool's own",
    )
    simulate.add_argument(
        "--latency",
        action="append",
        default=[],
        metavar="BACKEND=DIST",
        help="a backend's latency: 5ms, lognormal:20ms:0.5 or exp:20ms "
        "(default lognormal:10ms:0.5, or the logged latency with --replay)",
    )
    simulate.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="BACKEND@START-END",
        help="a backend refuses connections in a window, e.g. app-3@30s-60s",
    )
    simulate.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="requests a backend serves at once, the rest wait (0: no limit)",
    )
    simulate.add_argument(
        "--replay",
        metavar="ACCESS_LOG",
        help="replay the requests of a JSON access log instead",
    )
    simulate.add_argument(
        "--plot", metavar="FILE.png", help="draw load and latency over time"
    )
    return parser


def check(path: str) -> int:
    """
    Validate a configuration file and say so on one line.

    @param path: The file to validate.
    @return: 0 if it is valid (summary on stdout), 1 if not (the error,
        naming the section and key, on stderr).
    """
    try:
        config = loadConfig(path)
    except ConfigError as e:
        sys.stderr.write(f"{e.source or path}: error: {e.message}\n")
        return 1
    sys.stdout.write(f"{config.source}: OK, {config.counts()}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run C{python -m lbtwist}.

    @param argv: The arguments after the program name; C{sys.argv[1:]} if
        L{None}.
    @return: The exit status: 0 success, 1 invalid configuration, 2 usage
        error.
    """
    parser = _parser()
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if arguments.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write(
            f"{parser.prog}: error: a command is required (check, simulate)\n"
        )
        return 2
    if arguments.command == "simulate":
        return simulate(arguments)
    return check(arguments.file)


def simulate(arguments: argparse.Namespace) -> int:
    """
    Run C{python -m lbtwist simulate} and print its report.

    @param arguments: The parsed options.
    @return: 0, or 1 on a bad configuration, option or replay file (the
        error on stderr, on one line).
    """
    from lbtwist.simulate import SimulationError, plot, run

    try:
        config = loadConfig(arguments.file)
    except ConfigError as e:
        sys.stderr.write(f"{e.source or arguments.file}: error: {e.message}\n")
        return 1
    try:
        if arguments.requests < 1 or arguments.rate <= 0 or arguments.clients < 1:
            raise SimulationError("--requests, --rate and --clients must be positive")
        if arguments.concurrency < 0:
            raise SimulationError("--concurrency must be 0 or more")
        replay = None
        if arguments.replay is not None:
            try:
                replay = open(arguments.replay, encoding="utf-8")
            except OSError as e:
                raise SimulationError(
                    f"--replay: cannot read {arguments.replay}: {e.strerror}"
                ) from None
        try:
            text, outcomes = run(
                config,
                arguments.strategy,
                arguments.requests,
                arguments.rate,
                arguments.clients,
                arguments.seed,
                arguments.latency,
                arguments.fail,
                arguments.concurrency,
                replay,
            )
        finally:
            if replay is not None:
                replay.close()
        if arguments.plot is not None:
            plot(outcomes, arguments.plot)
    except SimulationError as e:
        sys.stderr.write(f"python -m lbtwist simulate: error: {e}\n")
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
