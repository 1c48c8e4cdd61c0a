"""Running flows as a system: the client, scheduler, workers and the script runner."""
