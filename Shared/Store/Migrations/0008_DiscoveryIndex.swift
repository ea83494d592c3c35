/// Discovery's index: a revision per app that rises with every change of its endpoints (an instance added,
/// removed, moved, readier or not, another state, IP or host ports), kept by a statement-level trigger on
/// `instances`, so every writer bumps it in its own transaction and every Discovery replica reads the same
/// number. The new revision is announced with `NOTIFY sigma_discovery, '<app> <revision>'`.
let m0008DiscoveryIndex = Migration(
    version: 8, name: "discovery: per-app endpoint revisions",
    sql: """
        CREATE TABLE discovery_index (
            app       text PRIMARY KEY,
            revision  bigint NOT NULL
        );

        CREATE FUNCTION sigma_bump_discovery(p_apps text[]) RETURNS void LANGUAGE sql AS $$
            WITH bumped AS (
                INSERT INTO discovery_index AS d (app, revision)
                SELECT DISTINCT a, 1 FROM unnest(p_apps) AS t(a) ORDER BY 1
                ON CONFLICT (app) DO UPDATE SET revision = d.revision + 1
                RETURNING app, revision
            )
            SELECT count(pg_notify('sigma_discovery', app || ' ' || revision)) FROM bumped;
        $$;

        CREATE FUNCTION sigma_instances_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            v_apps text[];
        BEGIN
            IF TG_OP = 'INSERT' THEN
                SELECT array_agg(DISTINCT app) INTO v_apps FROM new_rows;
            ELSIF TG_OP = 'DELETE' THEN
                SELECT array_agg(DISTINCT app) INTO v_apps FROM old_rows;
            ELSE
                SELECT array_agg(DISTINCT n.app) INTO v_apps
                FROM new_rows n JOIN old_rows o ON o.id = n.id
                WHERE (n.state, n.node, n.ip, n.host_ports, n.ready, n.ordinal, n.revision)
                      IS DISTINCT FROM (o.state, o.node, o.ip, o.host_ports, o.ready, o.ordinal, o.revision);
            END IF;
            IF v_apps IS NOT NULL THEN
                PERFORM sigma_bump_discovery(v_apps);
            END IF;
            RETURN NULL;
        END
        $$;

        CREATE TRIGGER instances_discovery_insert AFTER INSERT ON instances
            REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sigma_instances_changed();
        CREATE TRIGGER instances_discovery_update AFTER UPDATE ON instances
            REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION sigma_instances_changed();
        CREATE TRIGGER instances_discovery_delete AFTER DELETE ON instances
            REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION sigma_instances_changed();
        """)
