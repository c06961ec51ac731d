"""The parts of the event contracts (subjects, payload models); import them from `shared.contracts`."""
