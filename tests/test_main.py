"""
Tests for L{lbtwist.__main__}: C{python -m lbtwist check FILE}.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from lbtwist.__main__ import main

PROJECT_ROOT = Path(__file__).resolve().parent.parent

VALID = """
[[frontend]]
name = "web"
listen = "tcp:8080:interface=127.0.0.1"
pool = "app"

[[pool]]
name = "app"

[[pool.backend]]
url = "http://127.0.0.1:9001"

[[pool.backend]]
url = "http://127.0.0.1:9002"
weight = 3

[[pool.backend]]
url = "http://127.0.0.1:9003"
"""

INVALID = VALID.replace("weight = 3", "weight = 0")


class MainTests(SynchronousTestCase):
    """
    L{main} validates files and returns the exit status.
    """

    def write(self, content: str) -> str:
        """
        @return: The name of a new file holding C{content}.
        """
        path = str(self.mktemp())
        Path(path).write_text(content)
        return path

    def runMain(self, *argv: str) -> tuple[int, str, str]:
        """
        Run L{main} with C{argv}.

        @return: The exit status, stdout and stderr.
        """
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def test_checkValid(self) -> None:
        """
        A valid file gives status 0 and a one-line summary on stdout.
        """
        path = self.write(VALID)
        self.assertEqual(
            self.runMain("check", path),
            (0, f"{path}: OK, 1 frontend, 1 pool, 3 backends\n", ""),
        )

    def test_checkInvalid(self) -> None:
        """
        An invalid file gives status 1 and the error, naming the section
        and key, on stderr.
        """
        path = self.write(INVALID)
        self.assertEqual(
            self.runMain("check", path),
            (
                1,
                "",
                f'{path}: error: pool "app" backend 2: weight must be a positive integer\n',
            ),
        )

    def test_checkInvalidHealthKeys(self) -> None:
        """
        Bad values of C{passive_fall} and C{initial_state} are rejected with
        an error naming the key.
        """
        for line, message in [
            ("passive_fall = -1", "passive_fall must be an integer >= 0"),
            ('initial_state = "sideways"', 'initial_state "sideways" is not one of'),
        ]:
            with self.subTest(line=line):
                path = self.write(
                    VALID.replace(
                        '[[pool.backend]]\nurl = "http://127.0.0.1:9001"',
                        f'[pool.health]\n{line}\n\n[[pool.backend]]\n'
                        'url = "http://127.0.0.1:9001"',
                        1,
                    )
                )
                status, out, err = self.runMain("check", path)
                self.assertEqual((status, out), (1, ""))
                self.assertIn(f'pool "app" health: {message}', err)

    def test_checkUnreadable(self) -> None:
        """
        A missing file gives status 1 and says it cannot be read.
        """
        path = self.mktemp()
        self.assertEqual(
            self.runMain("check", path),
            (1, "", f"{path}: error: cannot read: No such file or directory\n"),
        )

    def test_checkNotTOML(self) -> None:
        """
        A file that is not TOML gives status 1 and the parser's message.
        """
        path = self.write("[[pool]\n")
        self.assertEqual(
            self.runMain("check", path),
            (
                1,
                "",
                f"{path}: error: invalid TOML: Expected ']]' at the end of an array "
                "declaration (at line 1, column 7)\n",
            ),
        )

    def test_usageErrors(self) -> None:
        """
        No command, an unknown command or a missing file name give status 2
        and the usage on stderr.
        """
        for argv in [(), ("frobnicate",), ("check",), ("check", "a.toml", "b.toml")]:
            with self.subTest(argv=argv):
                status, out, err = self.runMain(*argv)
                self.assertEqual((status, out), (2, ""))
                self.assertTrue(err.startswith("usage: python -m lbtwist"), err)

    def test_noCommandSaysWhatIsMissing(self) -> None:
        """
        Without a command the error names the commands there are.
        """
        status, out, err = self.runMain()
        self.assertEqual(
            err.splitlines()[-1],
            "python -m lbtwist: error: a command is required (check, simulate)",
        )

    def test_version(self) -> None:
        """
        C{--version} prints lbtwist's version on stdout and returns 0.
        """
        from lbtwist import __version__

        status, out, err = self.runMain("--version")
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith(f"lbtwist {__version__} (Twisted "), out)

    def test_help(self) -> None:
        """
        C{--help} prints the help on stdout and returns 0.
        """
        status, out, err = self.runMain("check", "--help")
        self.assertEqual((status, err), (0, ""))
        self.assertIn("Validate a configuration file", out)


class SubprocessTests(SynchronousTestCase):
    """
    C{python -m lbtwist} as a real process.
    """

    def check(self, content: str) -> subprocess.CompletedProcess[str]:
        """
        Run C{python -m lbtwist check} on a file holding C{content}.
        """
        path = Path(self.mktemp()).absolute()
        path.write_text(content)
        environment = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
        return subprocess.run(
            [sys.executable, "-m", "lbtwist", "check", str(path)],
            cwd=PROJECT_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_exitStatus(self) -> None:
        """
        The process exits 0 for a valid file and 1 for an invalid one.
        """
        valid = self.check(VALID)
        invalid = self.check(INVALID)
        self.assertEqual((valid.returncode, valid.stderr), (0, ""))
        self.assertTrue(valid.stdout.endswith(": OK, 1 frontend, 1 pool, 3 backends\n"))
        self.assertEqual((invalid.returncode, invalid.stdout), (1, ""))
        self.assertTrue(
            invalid.stderr.endswith(
                ': error: pool "app" backend 2: weight must be a positive integer\n'
            ),
            invalid.stderr,
        )
