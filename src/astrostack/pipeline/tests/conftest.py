"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def _restore_logging():
    """The CLI sets the root logger's level and handlers; do not leak them into other tests."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
