"""The lab layer: throw-away network namespaces, the lab cluster and the client's probe. May
import: cluster, plan, carp, engine, export."""
