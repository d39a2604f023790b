"""astrostack: calibrate, register and stack astrophotography frames."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("astrostack")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__", "run"]


def run(*args, **kwargs):
    """Run the whole pipeline; see :func:`astrostack.pipeline.run`."""
    from .pipeline import run as _run

    return _run(*args, **kwargs)
