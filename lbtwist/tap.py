# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd lbtwist} plugin: command-line options and C{makeService}.

Three ways to start, one of them at a time::

    twistd -n lbtwist --config lbtwist.toml
    twistd -n lbtwist --listen tcp:8080 --backend http://127.0.0.1:9001 ...
    twistd -n lbtwist --demo

The configuration is read and validated in L{Options.postOptions}, so a bad
file stops twistd with a clear message before anything is bound.

Under twistd every start-up failure is one line and exit status 1: a bad
option or configuration (C{twistd lbtwist: error: ...} on standard error,
instead of twistd's usage text), and a listener that cannot listen (logged,
instead of twistd's traceback).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.application.service import IService, MultiService
from twisted.logger import Logger
from twisted.python import usage

from lbtwist import __version__
from lbtwist.config import Config, ConfigError, configFromOptions, loadConfig

_log = Logger()


def versionLine() -> str:
    """
    @return: What C{--version} prints, e.g. C{"lbtwist 0.1.0 (Twisted
        26.10.0, Python 3.11.7)"}.
    """
    from twisted import __version__ as twisted

    python = ".".join(map(str, sys.version_info[:3]))
    return f"lbtwist {__version__} (Twisted {twisted}, Python {python})"


class Options(usage.Options):
    """
    Options of C{twistd lbtwist}.
    """

    synopsis = "[--config FILE | --listen DESC ... --backend URL ... | --demo]"
    longdesc = (
        "An HTTP load balancer and reverse proxy. Give a TOML configuration "
        "file, or the quick form with --listen and --backend (both repeat), "
        "or --demo for three built-in backends behind 127.0.0.1:8080."
    )

    optFlags = [
        ["demo", None, "Run three demo backends on 127.0.0.1:9001-9003 behind "
         "a balancer on 127.0.0.1:8080, with the admin page on 127.0.0.1:8081."],
    ]
    optParameters = [
        ["config", "c", None, "The TOML configuration file."],
        ["strategy", None, "round-robin",
         "Quick form: round-robin, weighted-round-robin, least-connections, "
         "random-two, consistent-hash (by client address) or peak-ewma."],
        ["health-path", None, None,
         "Quick form: HTTP health check path (default: a TCP connect check)."],
        ["admin", None, None,
         "Quick form: the admin listener (stats page, JSON API, metrics), "
         "e.g. tcp:8081:interface=127.0.0.1; loopback only."],
        ["access-log", None, None,
         "Quick form: access log file, or - for standard output."],
        ["mode", None, "http",
         "Quick form: http (L7) or tcp (L4, with tcp://host:port backends)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["backend"] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the options; under twistd, a bad one ends the process.

        @raise usage.UsageError: When not run by twistd, with what is wrong.
        @raise SystemExit: With status 1, when run by twistd (the options
            of its C{lbtwist} subcommand), after writing what is wrong as
            one line to standard error; twistd would print the whole usage
            text before it.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            sys.stderr.write(
                f"twistd lbtwist: error: {e} (see twistd lbtwist --help)\n"
            )
            raise SystemExit(1) from None

    def opt_version(self) -> None:
        """
        Print lbtwist's version and exit.
        """
        print(versionLine())
        sys.exit(0)

    def opt_listen(self, description: str) -> None:
        """
        Quick form: a Twisted server endpoint to listen on (repeatable;
        default tcp:8080).
        """
        self["listen"].append(description)

    def opt_backend(self, url: str) -> None:
        """
        Quick form: a backend URL, optionally with ",weight=N" and
        ",name=NAME" (repeatable).
        """
        self["backend"].append(url)

    def postOptions(self) -> None:
        """
        Read and validate the configuration.

        @raise usage.UsageError: With the configuration error's message.
        """
        quick = bool(
            self["listen"]
            or self["backend"]
            or self["health-path"]
            or self["admin"]
            or self["access-log"]
        )
        chosen = [bool(self["config"]), quick, bool(self["demo"])]
        if sum(chosen) > 1:
            raise usage.UsageError(
                "use one of --config, the quick form (--listen/--backend) or --demo"
            )
        try:
            self["parsed"] = self._configuration()
        except ConfigError as e:
            raise usage.UsageError(str(e))

    def _configuration(self) -> Config:
        if self["config"]:
            return loadConfig(self["config"])
        if self["demo"]:
            # Imported here: the demo backends need twisted.web's Site, which
            # lbtwist itself does not.
            from lbtwist.demo import demoConfig

            return demoConfig()
        if not self["backend"]:
            raise usage.UsageError(
                "no configuration: give --config FILE, --backend URL or --demo"
            )
        return configFromOptions(
            self["listen"],
            self["backend"],
            strategy=self["strategy"],
            healthPath=self["health-path"],
            admin=self["admin"],
            accessLog=self["access-log"],
            mode=self["mode"],
        )


def makeService(options: Options) -> IService:
    """
    Build lbtwist's service tree from parsed options.

    @param options: Parsed L{Options}.
    @raise SystemExit: With status 1, after writing the reason as one line
        to standard error, if it cannot be built (an access log that
        cannot be opened).
    """
    from twisted.internet import reactor

    from lbtwist.listener import StartupError
    from lbtwist.service import makeService as serviceFor

    try:
        root = serviceFor(options["parsed"], reactor)
    except StartupError as e:
        sys.stderr.write(f"twistd lbtwist: error: {e}\n")
        raise SystemExit(1) from None
    root.installSignalHandler()
    root.freezeHeap()
    if options["demo"]:
        # Imported only for --demo, as in Options._configuration.
        from lbtwist.demo import demoServices

        for demo in demoServices(reactor):
            demo.setServiceParent(root)
    top = OneLineStartFailure()
    root.setServiceParent(top)
    return top


class OneLineStartFailure(MultiService):
    """
    The service twistd starts: a listener of lbtwist that cannot listen is
    logged as one line (C{frontend "web": cannot listen on tcp:8080:
    address already in use}) and twistd exits with status 1, instead of
    printing a traceback.
    """

    def privilegedStartService(self) -> None:
        """
        Start the children's privileged part (binding the listeners).

        @raise SystemExit: With status 1, if a listener cannot listen.
        """
        from lbtwist.listener import StartupError

        try:
            super().privilegedStartService()
        except StartupError as e:
            _log.critical("{error}", error=str(e))
            raise SystemExit(1) from None

