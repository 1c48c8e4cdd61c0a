"""Storage adapters: each implements `ergon.core.store.Store` and passes the conformance suite."""
