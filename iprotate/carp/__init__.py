"""The CARP layer, pure (no socket, no clock; driven with `now`): the codec, the state machine, the
node (one host's machines and its receive path) and the status document. May import: cluster,
plan."""
