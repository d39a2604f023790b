"""The ``astrostack`` command line.  Each command group lives in its own module."""

from __future__ import annotations

import logging

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="astrostack",
    help="Calibrate, register and stack astrophotography frames.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logging."),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    # One module per command group; each defines ``register(app)``.
    from . import calibrate_cmd, inspect_cmd, register_cmd, run_cmd, simulate_cmd, stack_cmd

    for module in (simulate_cmd, inspect_cmd, calibrate_cmd, register_cmd, stack_cmd, run_cmd):
        module.register(app)


_register_commands()


def main() -> None:
    """Entry point of the ``astrostack`` script.

    When the command has finished, the interpreter's own teardown is skipped: clearing
    the modules of numpy, scipy, numba, astropy and OpenCV one by one takes 0.15-0.3 s
    and does nothing a finished process needs.  The ``atexit`` handlers still run
    (logging is flushed, temporary folders removed) and the output streams are flushed
    before the process exits with the command's status.  Whenever that cannot be done
    safely (another thread still running, an unknown interpreter) the normal exit is
    used.  An uncaught exception is never affected.
    """
    try:
        app()
    except SystemExit as exc:
        _finish(exc.code)
        raise
    _finish(0)


def _finish(code: object) -> None:
    """Exit at once with *code* (as :func:`sys.exit` would) after the ``atexit`` handlers.

    Returns without exiting when a fast exit is not safe; the caller then exits normally.
    """
    import atexit
    import os
    import sys
    import threading

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if run_exitfuncs is None or any(not t.daemon for t in others):
        return
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message goes to stderr, the status is 1
        sys.stderr.write(f"{code}\n")
        status = 1
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: what Python itself reports
            status = status or 120
    os._exit(status)
