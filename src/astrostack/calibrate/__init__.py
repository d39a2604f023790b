"""Calibration: master offset/dark/flat, calibration of lights, cosmetic correction, CFA."""

from .calibration import *  # noqa: F403
from .cfa import *  # noqa: F403
from .cosmetic import *  # noqa: F403
from .debayer import *  # noqa: F403
from .master_inputs import *  # noqa: F403
from .masters import *  # noqa: F403
