/// Events are kept for the scheduler's `--events-retention`: the oldest go first, found by time.
let m0011EventsRetention = Migration(
    version: 11, name: "events: index by time for retention",
    sql: """
        CREATE INDEX events_at ON events (at);
        """)
