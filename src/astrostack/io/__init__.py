"""Frames in and out: readers, writers, metadata, session discovery."""

from .atomic import *  # noqa: F403
from .frame import *  # noqa: F403
