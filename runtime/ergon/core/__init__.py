"""The durable-execution core: flows, steps, replay, signals, timers, children, DAGs.

It knows storage only through the `Store` protocol (`ergon.core.store`).

Internal: these modules change without notice. Use `ergon` (and `ergon.storage` to write a
store); the public names are listed, by concern, in `ergon.__all__`.
"""
