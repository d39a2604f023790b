"""The merge machinery shared by masters and the final stack.

- :mod:`.kernels`: per-pixel rejection and combination (compiled), ``combine``.
- :mod:`.rejection`: the compiled per-pixel rejection kernels behind ``combine``.
- :mod:`.winsorized`: winsorized sigma clipping, per pixel and block-wise.
- :mod:`.blockwise`: block-wise sigma (first pass) and ESD rejection, frame-order means.
- :mod:`.stats`: compiled order statistics (``robust_location_scale``).
- :mod:`.sources`: frame sources that read row bands.
- :mod:`.engine`: the streamed band combine with a memory budget.
"""

from .engine import *  # noqa: F403
from .kernels import *  # noqa: F403
from .sources import *  # noqa: F403
from .stats import *  # noqa: F403
