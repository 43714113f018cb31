"""The `iprotate` command line: a click group; each command lives in a module of its own."""

from __future__ import annotations

import click

from iprotate import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="iprotate")
def main() -> None:
    """Active-active public IP rotation over CARP, wire-compatible with ucarp."""


def _register() -> None:
    # Imported for their side effect: each module adds its commands to `main`.
    from iprotate.cli import lab_cmd, ops_cmd, plan_cmd, run_cmd, ucarp_cmd  # noqa: F401


_register()
