/// The allocator's instance IPs: pools and one row per address, so that uniqueness lives in constraints.
let m0002IPPools = Migration(
    version: 2, name: "allocator: IP pools and addresses",
    sql: """
        CREATE TABLE ip_pools (
            name        text PRIMARY KEY CHECK (name <> ''),
            cidr        cidr NOT NULL,
            gateway     inet,
            created_at  timestamptz NOT NULL DEFAULT now(),
            -- Two pools never share an address.
            EXCLUDE USING gist (cidr inet_ops WITH &&)
        );

        CREATE TABLE ip_addresses (
            address       inet PRIMARY KEY,
            pool          text NOT NULL REFERENCES ip_pools(name) ON DELETE CASCADE,
            -- Network, broadcast, gateway and the operator's list: never handed out.
            reserved      boolean NOT NULL DEFAULT false,
            -- The owner; one address per instance, kept across migrations until the instance is deleted.
            instance      uuid UNIQUE,
            allocated_at  timestamptz,
            -- NULL while never used: those go first, then the one released longest ago.
            released_at   timestamptz,
            CHECK (NOT (reserved AND instance IS NOT NULL))
        );
        CREATE INDEX ip_addresses_free ON ip_addresses (pool, released_at NULLS FIRST, address)
            WHERE instance IS NULL AND NOT reserved;
        """)
