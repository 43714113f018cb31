"""Free text (the cluster file's path, names) put into generated configuration files."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def comment_text(text: str) -> str:
    """`text` made safe for a comment line of a generated file: no control character. A file
    name may hold a newline, and rc.conf and /etc/network/interfaces are read by a shell or
    ifupdown: the rest of the name would be a line of its own (`reboot`, an `up` command). Also
    for what a command prints from a file it read: an escape sequence would talk to the terminal."""
    return _CONTROL.sub("?", text)
