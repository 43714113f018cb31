"""The interactive loop both labs (`iprotate lab`, `iprotate lab --bgp`) run: a live table redrawn
in place when it changes, and one command a line, `VERB HOST`, from a table of commands."""

from __future__ import annotations

import select
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import click

QUIT = ("quit", "q", "exit")


@dataclass(frozen=True)
class Commands:
    """What a lab's user may type: `verb NAME` runs `actions[verb](NAME)` for a NAME in `names`.
    An exception of a type in `failures` is shown and the loop carries on (a service that cannot
    start, say); any other ends the lab."""

    actions: Mapping[str, Callable[[str], object]]
    names: Collection[str]
    help: str
    failures: tuple[type[Exception], ...] = ()
    poll: Callable[[], object] = field(default=lambda: None)  # before each redraw
    every: float = 0.5  # seconds between looks at the table while nobody types


def interactive(table: Callable[[], str], commands: Commands) -> None:
    """Show `table()` (its first line, a clock, does not count as a change) and run the commands
    typed, until `quit` or the end of standard input."""
    last = ""
    while True:
        commands.poll()
        shown = table()
        body = shown.split("\n", 1)[1]
        if body != last:
            click.clear()  # a live table, redrawn in place
            click.echo(f"{shown}\n\n{commands.help}\n> ", nl=False)
            last = body
        ready, _, _ = select.select([sys.stdin], [], [], commands.every)
        if not ready:
            continue
        line = sys.stdin.readline()
        if not line:
            return
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        if cmd in QUIT:
            return
        if cmd in commands.actions and len(args) == 1 and args[0] in commands.names:
            try:
                commands.actions[cmd](args[0])
            except commands.failures as e:
                click.echo(f"{cmd} {args[0]}: {e}\n> ", nl=False)
                continue
            last = ""
        else:
            click.echo(f"? {line.strip()}\n{commands.help}\n> ", nl=False)
