"""The `iprotate` command line: a click group; each command lives in a module of its own."""

from __future__ import annotations

import sys

from iprotate.engine import early_signals as _early

# `iprotate run` holds the signals from its first line: the imports below take half a second and
# more on a loaded machine, and a SIGHUP there used to kill the daemon (engine.early_signals).
_held = _early.hold_early() if sys.argv[1:2] == ["run"] else None

import click  # noqa: E402

from iprotate import __version__  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="iprotate")
def main() -> None:
    """Active-active public IP rotation over CARP, wire-compatible with ucarp."""


def early_signals() -> _early.EarlySignals | None:
    """What `iprotate run` recorded before its event loop took the signals over."""
    return _held


def _register() -> None:
    # Imported for their side effect: each module adds its commands to `main`.
    from iprotate.cli import (  # noqa: F401
        export_cmd,
        import_cmd,
        lab_cmd,
        ops_cmd,
        plan_cmd,
        run_cmd,
        ucarp_cmd,
    )


_register()
