/// The allocator's SSDs: each node's inventory, one row per device or directory, with at most one owner.
let m0005SSDs = Migration(
    version: 5, name: "allocator: SSD inventory and owners",
    sql: """
        CREATE TABLE ssds (
            node          text NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
            path          text NOT NULL CHECK (path <> ''),
            size_bytes    bigint NOT NULL CHECK (size_bytes > 0),
            model         text NOT NULL DEFAULT '',
            healthy       boolean NOT NULL DEFAULT true,
            instance      uuid,
            allocated_at  timestamptz,
            PRIMARY KEY (node, path)
        );
        CREATE INDEX ssds_free ON ssds (node, size_bytes, path) WHERE instance IS NULL AND healthy;
        CREATE INDEX ssds_instance ON ssds (instance) WHERE instance IS NOT NULL;
        """)
