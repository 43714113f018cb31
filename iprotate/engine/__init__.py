"""The engine layer: the asyncio shell around a node (sockets, netlink, ARP, the control socket,
metrics, sd_notify, hooks). It carries out what the carp layer decides and decides nothing about
CARP itself. May import: cluster, plan, carp."""
