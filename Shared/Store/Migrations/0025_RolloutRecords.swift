/// Who asked (docs/protocol.md, "Rollouts"): every revision records who applied it and every rollout who
/// started it, the caller's principal name ("anonymous" without access control) or "scheduler" for an
/// automatic revert. Ended rollouts are kept for the scheduler's `--rollout-retention`, found by when they
/// ended; each app's newest ones and its last that succeeded always stay.
let m0025RolloutRecords = Migration(
    version: 25, name: "who applied each revision and started each rollout; rollout retention",
    sql: """
        ALTER TABLE app_revisions ADD COLUMN applied_by text NOT NULL DEFAULT '';
        ALTER TABLE rollouts ADD COLUMN started_by text NOT NULL DEFAULT '';
        CREATE INDEX rollouts_ended ON rollouts (ended_at) WHERE ended_at IS NOT NULL;
        """)
