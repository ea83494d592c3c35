/// `RestartInstance` (docs/protocol.md): an instance that ended (Succeeded, Failed, OOMKilled, Killed) may be
/// restarted by an operator; it goes to NeedMigration and is placed again as a new generation. The lifecycle
/// table gains that move (`InstanceState.Event.restarted`; `StateConstraintTests` compares the two).
let m0027InstanceRestart = Migration(
    version: 27, name: "lifecycle: an ended instance may be restarted",
    sql: """
        INSERT INTO lifecycle_moves (machine, from_state, to_state, event) VALUES
            ('instance', 'Failed', 'NeedMigration', 'restarted'),
            ('instance', 'Killed', 'NeedMigration', 'restarted'),
            ('instance', 'OOMKilled', 'NeedMigration', 'restarted'),
            ('instance', 'Succeeded', 'NeedMigration', 'restarted');
        """)
