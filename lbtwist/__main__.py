# -*- test-case-name: tests.test_main -*-
"""
lbtwist's command line tools: C{python -m lbtwist check FILE} and
C{python -m lbtwist --version}.

The balancer itself runs under C{twistd -n lbtwist}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lbtwist.config import ConfigError, loadConfig
from lbtwist.tap import versionLine

__all__ = ["check", "main"]


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
        sys.stderr.write(f"{parser.prog}: error: a command is required (check)\n")
        return 2
    return check(arguments.file)


if __name__ == "__main__":
    sys.exit(main())
