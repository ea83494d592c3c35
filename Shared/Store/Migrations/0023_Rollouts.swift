/// Rollouts (docs/protocol.md, "Rollouts"): one record per changed template of an app, from the revision its
/// instances ran to the one they roll to, with the strategy it ran under, its state (Progressing, then
/// Succeeded, Failed or Superseded by a later apply), why, and when it last made progress (`available`: how
/// many new instances were available then). A rollout is Paused by an operator or after its canaries until it
/// is resumed or promoted (`promoted`: past its canaries; `replaced` counts the instances it replaced). At most one is Progressing or Paused per app.
/// `ready_since` is when an
/// instance last turned ready (NULL while it is not): an instance counts as available once it has been ready
/// for the strategy's minReadySeconds.
let m0023Rollouts = Migration(
    version: 23, name: "rollout records and when each instance turned ready",
    sql: """
        CREATE TABLE rollouts (
            id bigserial PRIMARY KEY,
            app text NOT NULL,
            from_revision bigint NOT NULL,
            to_revision bigint NOT NULL,
            cause text NOT NULL DEFAULT '',
            strategy jsonb NOT NULL,
            state text NOT NULL DEFAULT 'Progressing' CHECK (state IN ('Progressing', 'Paused', 'Succeeded', 'Failed', 'Superseded')),
            promoted boolean NOT NULL DEFAULT false,
            replaced integer NOT NULL DEFAULT 0,
            reason text NOT NULL DEFAULT '',
            available integer NOT NULL DEFAULT 0,
            started_at timestamptz NOT NULL DEFAULT now(),
            progressed_at timestamptz NOT NULL DEFAULT now(),
            ended_at timestamptz
        );
        CREATE UNIQUE INDEX rollouts_active ON rollouts (app) WHERE state IN ('Progressing', 'Paused');
        CREATE INDEX rollouts_app ON rollouts (app, id);
        ALTER TABLE instances ADD COLUMN ready_since timestamptz;
        UPDATE instances SET ready_since = now() WHERE ready;
        """)
