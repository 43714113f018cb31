"""The cluster layer: the TOML cluster file -> a validated, frozen model, every error with its key
path. Imports nothing else of iprotate."""
