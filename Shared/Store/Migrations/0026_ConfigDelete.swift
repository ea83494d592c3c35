/// `DeleteConfig` (docs/protocol.md, "sigma-config"): a deleted config set's versions are gone, and its release
/// row stays as a tombstone (`current` 0, its revision raised, so every replica's cache and long poll see the
/// change) that remembers the last version number: a set published again goes on from there, as a deleted
/// app applied again goes on with its revisions.
let m0026ConfigDelete = Migration(
    version: 26, name: "config sets can be deleted; their numbering goes on",
    sql: """
        ALTER TABLE config_releases ADD COLUMN last_version bigint NOT NULL DEFAULT 0;
        """)
