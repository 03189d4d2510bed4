"""
pytest configuration: run every test in a scratch directory, so that
trial's C{mktemp()} never writes into the checkout.
"""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _scratchDirectory(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.chdir(tmp_path_factory.mktemp("work"))
