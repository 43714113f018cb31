"""iprotate: active-active public IP rotation over CARP, wire-compatible with ucarp 1.5.2."""

__version__ = "0.1.0"
