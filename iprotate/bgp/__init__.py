"""BGP mode's pure core: what this host announces, when (the announcer), and the BIRD 2
configuration that announces it. No socket, no clock: driven with `now` like the CARP core."""
