/// Discovery's index without a hot row per app (issue "Scale I"): every transaction that changes an app's
/// endpoints used to bump the app's one row in `discovery_index`, so every node's heartbeat that changed an
/// instance of the app waited for the one before it to commit. Now each database session bumps a row of its
/// own (`shard` = its backend pid), and the app's index is the sum of its rows (`app_index`). Two sessions
/// never wait for each other; the sum rises with every committed change and every later snapshot sees at
/// least what an earlier one saw, so every replica still answers the same index for the same state and the
/// index only rises. `sigma_fold_discovery_index()` (the active scheduler, now and then) folds the sessions'
/// rows into shard 0 without changing any sum, skipping rows a running transaction holds.
///
/// The notification's revision ('<app> <revision>') is now a lower bound of the app's index once the change is
/// committed: a listener reloads the app on every notification rather than comparing.
let m0029DiscoveryIndexShards = Migration(
    version: 29, name: "discovery: one index row per app and session, summed",
    sql: """
        ALTER TABLE discovery_index ADD COLUMN shard integer NOT NULL DEFAULT 0;
        ALTER TABLE discovery_index DROP CONSTRAINT discovery_index_pkey;
        ALTER TABLE discovery_index ADD PRIMARY KEY (app, shard);

        CREATE OR REPLACE VIEW app_index AS
            SELECT app, sum(revision)::bigint AS revision FROM discovery_index GROUP BY app;

        CREATE OR REPLACE FUNCTION sigma_bump_discovery(p_apps text[]) RETURNS void LANGUAGE sql AS $$
            WITH bumped AS (
                INSERT INTO discovery_index AS d (app, shard, revision)
                SELECT DISTINCT a, pg_backend_pid(), 1 FROM unnest(p_apps) AS t(a) ORDER BY 1
                ON CONFLICT (app, shard) DO UPDATE SET revision = d.revision + 1
                RETURNING app
            )
            SELECT count(pg_notify('sigma_discovery', b.app || ' ' ||
                       (coalesce((SELECT sum(i.revision) FROM discovery_index i WHERE i.app = b.app), 0) + 1)::bigint))
            FROM bumped b;
        $$;

        CREATE FUNCTION sigma_fold_discovery_index() RETURNS bigint LANGUAGE sql AS $$
            WITH taken AS (
                SELECT ctid FROM discovery_index WHERE shard <> 0 FOR UPDATE SKIP LOCKED
            ), folded AS (
                DELETE FROM discovery_index d USING taken t WHERE d.ctid = t.ctid RETURNING d.app, d.revision
            ), sums AS (
                SELECT app, sum(revision)::bigint AS revision FROM folded GROUP BY app
            ), kept AS (
                INSERT INTO discovery_index AS d (app, shard, revision) SELECT app, 0, revision FROM sums ORDER BY app
                ON CONFLICT (app, shard) DO UPDATE SET revision = d.revision + EXCLUDED.revision
                RETURNING 1
            )
            SELECT count(*) FROM kept;
        $$;
        """)
