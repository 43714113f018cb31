"""The export layer: other engines' configuration from the plan (ucarp command lines, units and
stanzas). May import: cluster, plan."""
