/// At most one live copy (failover: safe). A node holds a lease that each accepted heartbeat renews:
/// `lease_renewed_at` is when the scheduler last granted it (the database's clock) and `lease_ttl_ms` how long
/// that grant lasts on the node. An instance placed elsewhere while an older copy may still run on the node it
/// left names that copy in `prior_node` and `prior_generation`; its safe-mode successor may not start until
/// the copy is gone (its node reported it final, or its node is Broken and its lease has certainly lapsed).
let m0021NodeLeases = Migration(
    version: 21, name: "node leases and the prior copy of a moved instance",
    sql: """
        ALTER TABLE nodes ADD COLUMN lease_renewed_at timestamptz;
        ALTER TABLE nodes ADD COLUMN lease_ttl_ms bigint NOT NULL DEFAULT 0 CHECK (lease_ttl_ms >= 0);
        ALTER TABLE instances ADD COLUMN prior_node text;
        ALTER TABLE instances ADD COLUMN prior_generation bigint NOT NULL DEFAULT 0;
        CREATE INDEX instances_prior_node ON instances (prior_node) WHERE prior_node IS NOT NULL;
        """)
