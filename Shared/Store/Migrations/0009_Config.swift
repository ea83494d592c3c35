/// The config center: immutable versions of each app's config set, and per app the release (the current
/// version, and a gray version for some instances).
let m0009Config = Migration(
    version: 9, name: "config: versions and releases",
    sql: """
        CREATE TABLE config_versions (
            app         text NOT NULL,
            version     bigint NOT NULL CHECK (version >= 1),
            -- [{path, content (base64), mode, secret, raw}]
            files       jsonb NOT NULL,
            script      text NOT NULL DEFAULT '',
            author      text NOT NULL DEFAULT '',
            message     text NOT NULL DEFAULT '',
            checksum    text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (app, version)
        );

        CREATE TABLE config_releases (
            app             text PRIMARY KEY,
            current         bigint NOT NULL,
            gray_version    bigint NOT NULL DEFAULT 0,
            gray_ordinals   integer[] NOT NULL DEFAULT '{}',
            gray_instances  uuid[] NOT NULL DEFAULT '{}',
            revision        bigint NOT NULL DEFAULT 1
        );
        """)
