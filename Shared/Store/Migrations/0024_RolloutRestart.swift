/// A restart (`RestartRollout`, `sigmactl rollout restart`) is a rollout to a revision with the same spec:
/// `restart` makes it replace every instance, where a rollout otherwise leaves alone the instances whose
/// revision already has its template.
let m0024RolloutRestart = Migration(
    version: 24, name: "rollouts that restart every instance",
    sql: """
        ALTER TABLE rollouts ADD COLUMN restart boolean NOT NULL DEFAULT false;
        """)
