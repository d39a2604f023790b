"""Synthetic astrophotography sessions with exact ground truth.

The project's fixture factory and the demo's data.  Quick start::

    from astrostack.simulate import SessionConfig, simulate_session, load_truth

    truth = simulate_session("night", SessionConfig.small(seed=3))  # writes bias/ darks/ ...
    truth = load_truth("night")                                     # later, from disk

In-memory helpers for fast unit tests (no disk): :func:`simulate_light`,
:func:`simulate_bias`, :func:`simulate_dark`, :func:`simulate_flat`,
:func:`render_sky`, :func:`make_star_field`, :func:`make_scene`, :func:`make_sensor`.
See ``docs/simulator.md`` for what is modelled, the units and the truth format.
"""

from .config import *  # noqa: F403
from .config import __all__ as _config_all
from .frames import *  # noqa: F403
from .frames import __all__ as _frames_all
from .scene import *  # noqa: F403
from .scene import __all__ as _scene_all
from .sensor import *  # noqa: F403
from .sensor import __all__ as _sensor_all
from .session import *  # noqa: F403
from .session import __all__ as _session_all
from .truth import *  # noqa: F403
from .truth import __all__ as _truth_all

__all__ = [*_config_all, *_frames_all, *_scene_all, *_sensor_all, *_session_all, *_truth_all]
