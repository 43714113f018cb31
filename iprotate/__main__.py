"""`python -m iprotate`."""

from iprotate.cli import main

main()
