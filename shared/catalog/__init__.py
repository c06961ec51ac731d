"""The catalog: what vbm knows and decides, in the database (jobs, runs, tasks, the snapshot
ledger, restore points, restores, replication, pruning, usage, alerts, API keys)."""
