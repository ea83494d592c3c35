/// The usage history (docs/operations.md, "Usage history and right-sizing"): what each instance (by its name,
/// APP-ORDINAL, so a new generation or a move keeps its line) and each pool group (an IDC) used beside what it
/// asked for and may use. The active scheduler writes one sample row per Running instance and per group every
/// `--usage-interval` in one statement; once an hour is over, its samples are folded into one `hour` row
/// (the average, the highest reading and the count) and deleted; hour rows are kept `--usage-retention`.
let m0028UsageHistory = Migration(
    version: 28, name: "usage history: samples folded into hours, a week kept",
    sql: """
        CREATE TABLE usage_history (
            scope                 text NOT NULL CHECK (scope IN ('instance', 'group')),
            name                  text NOT NULL,
            app                   text NOT NULL DEFAULT '',
            resolution            text NOT NULL CHECK (resolution IN ('sample', 'hour')),
            at                    timestamptz NOT NULL,
            samples               integer NOT NULL DEFAULT 1 CHECK (samples >= 1),
            cpu_millis            bigint NOT NULL,
            cpu_peak_millis       bigint NOT NULL,
            memory_bytes          bigint NOT NULL,
            memory_peak_bytes     bigint NOT NULL,
            request_cpu_millis    bigint NOT NULL,
            request_memory_bytes  bigint NOT NULL,
            limit_cpu_millis      bigint NOT NULL,
            limit_memory_bytes    bigint NOT NULL,
            capacity_cpu_millis   bigint NOT NULL DEFAULT 0,
            capacity_memory_bytes bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (scope, name, resolution, at)
        );
        CREATE INDEX usage_history_app ON usage_history (app, at) WHERE scope = 'instance';
        CREATE INDEX usage_history_age ON usage_history (resolution, at);
        """)
