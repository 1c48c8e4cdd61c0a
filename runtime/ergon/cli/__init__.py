"""The `ergon` command line."""
