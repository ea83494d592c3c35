/// The core tables every service shares: nodes, apps, instances. Later issues add to them.
let m0001CoreTables = Migration(
    version: 1, name: "core tables: nodes, apps, instances",
    sql: """
        CREATE TABLE nodes (
            name            text PRIMARY KEY CHECK (name <> ''),
            host_ip         inet NOT NULL,
            region          text NOT NULL DEFAULT '',
            idc             text NOT NULL DEFAULT '',
            isp             text NOT NULL DEFAULT '',
            labels          jsonb NOT NULL DEFAULT '{}'::jsonb,
            cpu_millis      bigint NOT NULL CHECK (cpu_millis >= 0),
            memory_bytes    bigint NOT NULL CHECK (memory_bytes >= 0),
            disk_bytes      bigint NOT NULL CHECK (disk_bytes >= 0),
            state           text NOT NULL DEFAULT 'Ready',
            schedulable     boolean NOT NULL DEFAULT true,
            last_heartbeat  timestamptz,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE apps (
            name        text PRIMARY KEY CHECK (name <> ''),
            team        text NOT NULL DEFAULT '',
            spec        jsonb NOT NULL DEFAULT '{}'::jsonb,
            revision    bigint NOT NULL DEFAULT 1,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE instances (
            id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            app         text NOT NULL REFERENCES apps(name),
            ordinal     integer NOT NULL CHECK (ordinal >= 0),
            node        text REFERENCES nodes(name),
            state       text NOT NULL DEFAULT 'Pending',
            generation  bigint NOT NULL DEFAULT 0,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            UNIQUE (app, ordinal)
        );
        CREATE INDEX instances_node ON instances (node);
        """)
