"""Running flows as a system: the client, scheduler, workers and the script runner.

Internal: use `ergon.Client`, `ergon.Scheduler`, `ergon.Worker` and `ergon.run`.
"""
