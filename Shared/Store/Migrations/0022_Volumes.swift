/// Where each ordinal's volumes are (AppSpec.volumes): a row per node that holds a set, `bound_at` the last
/// time the ordinal was bound there (placement prefers the most recent), `release_at` set once its app is
/// deleted or scaled below the ordinal (plus the retention); due rows go to the node's agent, which removes
/// them and says so, and then the row goes. The allocator's view `held_ssds` tells placement how many SSDs each
/// instance holds on each node (an instance keeps those of the nodes it left), so it can go back to them.
let m0022Volumes = Migration(
    version: 22, name: "volumes: which nodes hold each ordinal's volumes, and when they are released",
    sql: """
        CREATE TABLE volumes (
            team text NOT NULL,
            app text NOT NULL,
            ordinal integer NOT NULL CHECK (ordinal >= 0),
            node text NOT NULL,
            bound_at timestamptz NOT NULL DEFAULT now(),
            release_at timestamptz,
            PRIMARY KEY (team, app, ordinal, node)
        );
        CREATE INDEX volumes_node ON volumes (node);
        CREATE INDEX volumes_app ON volumes (app, ordinal);
        CREATE VIEW held_ssds AS SELECT node, instance, count(*)::int AS held FROM ssds WHERE instance IS NOT NULL GROUP BY node, instance;
        """)
