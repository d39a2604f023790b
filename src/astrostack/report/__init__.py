"""HTML run report, auto-stretched previews and plots."""

from .html import *  # noqa: F403
from .html import __all__ as _html_all
from .plots import *  # noqa: F403
from .plots import __all__ as _plots_all
from .stretch import *  # noqa: F403
from .stretch import __all__ as _stretch_all

__all__ = [*_html_all, *_plots_all, *_stretch_all]
