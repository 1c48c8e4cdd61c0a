"""The durable-execution core: flows, steps, replay, signals, timers, children, DAGs.

It knows storage only through the `Store` protocol (`ergon.core.store`).
"""
