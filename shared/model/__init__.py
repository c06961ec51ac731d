"""Pure models: a job's validated shape, schedules, retention. No I/O here."""
