"""The end-to-end run: configuration, stage cache, frame selection, progress.

Quick start::

    import astrostack

    result = astrostack.run("night/", "night-out/", max_fwhm=4.0)
    result.outputs["stack.fits"], result.stage("register").reused

See ``docs/pipeline.md``.
"""

from .cache import *  # noqa: F403
from .cache import __all__ as _cache_all
from .config import *  # noqa: F403
from .config import __all__ as _config_all
from .progress import *  # noqa: F403
from .progress import __all__ as _progress_all
from .run import *  # noqa: F403
from .run import __all__ as _run_all
from .selection import *  # noqa: F403
from .selection import __all__ as _selection_all

__all__ = [*_cache_all, *_config_all, *_progress_all, *_run_all, *_selection_all]
