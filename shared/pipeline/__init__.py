"""What the pipeline services share: vCenter sessions, task and run state, the snapshot ledger."""
