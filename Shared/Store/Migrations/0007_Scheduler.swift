/// The scheduler's state: node health and fencing epochs, instance resources and outcomes, app revisions,
/// team quotas, the event log, and the lease that makes one scheduler the active one.
let m0007Scheduler = Migration(
    version: 7, name: "scheduler: revisions, quotas, events, lease, instance resources",
    sql: """
        -- nodes.state holds the health (Ready, Suspect, Broken); nodes.schedulable = NOT cordoned.
        ALTER TABLE nodes
            ADD COLUMN draining            boolean NOT NULL DEFAULT false,
            ADD COLUMN epoch               bigint  NOT NULL DEFAULT 1,
            ADD COLUMN usage_cpu_millis    bigint  NOT NULL DEFAULT 0,
            ADD COLUMN usage_memory_bytes  bigint  NOT NULL DEFAULT 0,
            ADD COLUMN usage_disk_bytes    bigint  NOT NULL DEFAULT 0;

        ALTER TABLE apps
            ADD COLUMN deleted boolean NOT NULL DEFAULT false;

        CREATE TABLE app_revisions (
            app           text NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
            revision      bigint NOT NULL,
            spec          jsonb NOT NULL,
            change_cause  text NOT NULL DEFAULT '',
            created_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (app, revision)
        );

        ALTER TABLE instances
            ADD COLUMN revision              bigint  NOT NULL DEFAULT 1,
            ADD COLUMN request_cpu_millis    bigint  NOT NULL DEFAULT 0 CHECK (request_cpu_millis >= 0),
            ADD COLUMN request_memory_bytes  bigint  NOT NULL DEFAULT 0 CHECK (request_memory_bytes >= 0),
            ADD COLUMN limit_cpu_millis      bigint  NOT NULL DEFAULT 0 CHECK (limit_cpu_millis >= 0),
            ADD COLUMN limit_memory_bytes    bigint  NOT NULL DEFAULT 0 CHECK (limit_memory_bytes >= 0),
            ADD COLUMN applied_cpu_millis    bigint,
            ADD COLUMN applied_memory_bytes  bigint,
            ADD COLUMN usage_cpu_millis      bigint  NOT NULL DEFAULT 0,
            ADD COLUMN usage_memory_bytes    bigint  NOT NULL DEFAULT 0,
            ADD COLUMN pending_reason        text    NOT NULL DEFAULT '',
            ADD COLUMN reason                text    NOT NULL DEFAULT '',
            ADD COLUMN exit_code             integer NOT NULL DEFAULT 0,
            ADD COLUMN ready                 boolean NOT NULL DEFAULT false,
            -- Copies of what the Allocator handed out at binding, for assignments and listings.
            ADD COLUMN ip                    text    NOT NULL DEFAULT '',
            ADD COLUMN prefix_length         integer NOT NULL DEFAULT 0,
            ADD COLUMN gateway               text    NOT NULL DEFAULT '',
            ADD COLUMN host_ports            jsonb   NOT NULL DEFAULT '{}'::jsonb,
            ADD COLUMN ssds                  jsonb   NOT NULL DEFAULT '[]'::jsonb,
            -- Set by a manual migration to a chosen node.
            ADD COLUMN target_node           text    NOT NULL DEFAULT '';
        CREATE INDEX instances_unplaced ON instances (app, ordinal) WHERE node IS NULL;

        CREATE TABLE team_quotas (
            team          text PRIMARY KEY,
            cpu_millis    bigint NOT NULL CHECK (cpu_millis >= 0),
            memory_bytes  bigint NOT NULL CHECK (memory_bytes >= 0)
        );

        CREATE TABLE events (
            id       bigserial PRIMARY KEY,
            kind     text NOT NULL,
            name     text NOT NULL,
            reason   text NOT NULL,
            message  text NOT NULL DEFAULT '',
            at       timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX events_object ON events (kind, name, id);

        -- Active/standby: the holder of an unexpired lease runs placement, failure detection and migration.
        CREATE TABLE leases (
            name        text PRIMARY KEY,
            holder      text NOT NULL,
            term        bigint NOT NULL,
            expires_at  timestamptz NOT NULL
        );
        """)
