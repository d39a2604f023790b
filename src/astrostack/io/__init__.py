"""Frames in and out: readers, writers, metadata, session discovery."""

from .atomic import *  # noqa: F403
from .frame import *  # noqa: F403
from .metadata import *  # noqa: F403
from .readers import *  # noqa: F403
from .session import *  # noqa: F403
from .writers import *  # noqa: F403
