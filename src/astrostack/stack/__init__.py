"""Integration of registered lights: normalisation, weighting, rejection, outputs.

- :mod:`.normalize`: per-frame statistics (one band-by-band pass) and normalisation.
- :mod:`.weights`: per-frame weights (noise, exposure, FWHM, star count, products).
- :mod:`.integrate`: :func:`stack_frames` and :func:`write_stack`.
"""

from .integrate import *  # noqa: F403
from .normalize import *  # noqa: F403
from .weights import *  # noqa: F403
