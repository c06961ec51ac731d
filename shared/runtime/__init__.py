"""Running services: the service runtime, the bus runner, the outbox, the supervisor of `vbm up`,
process helpers."""
