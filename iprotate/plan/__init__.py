"""The plan layer: the pure planner, the plan it returns, CARP's timing arithmetic the priorities
rest on, and what `check` and `plan` print. May import: cluster."""
