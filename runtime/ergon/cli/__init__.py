"""The `ergon` command line (internal: the commands are the interface, not these modules)."""
