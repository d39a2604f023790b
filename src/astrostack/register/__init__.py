"""astrostack.register: star detection, frame quality, matching, transforms and warping.

See ``docs/registration.md``.  Transforms are 3x3 matrices mapping frame ``(x, y)``
to reference ``(x, y)`` (x = column, y = row, pixel centres at integers).
"""

from .batch import *  # noqa: F403
from .match import *  # noqa: F403
from .phasecorr import *  # noqa: F403
from .quality import *  # noqa: F403
from .register import *  # noqa: F403
from .stars import *  # noqa: F403
from .transform import *  # noqa: F403
from .warp import *  # noqa: F403
