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
    """Entry point of the ``astrostack`` script."""
    app()
