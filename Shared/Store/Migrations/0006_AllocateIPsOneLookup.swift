/// sigma_allocate_ips() with one lookup instead of two: unknown instances and instances without an address are
/// found in a single pass over the request (same behaviour, one statement fewer per call).
let m0006AllocateIPsOneLookup = Migration(
    version: 6, name: "allocator: sigma_allocate_ips() with one lookup",
    sql: """
        CREATE OR REPLACE FUNCTION sigma_allocate_ips(p_instances uuid[], p_pool text)
        RETURNS TABLE (instance uuid, address text, pool text, prefix_length int, gateway text, newly_allocated boolean)
        LANGUAGE plpgsql
        -- A generic plan cannot know the LIMIT and sorts the whole pool; plan each call for its batch.
        SET plan_cache_mode = force_custom_plan
        AS $$
        #variable_conflict use_column
        DECLARE
            v_pool text;
            v_pools int;
            v_unknown uuid[];
            v_missing uuid[];
            v_got int;
        BEGIN
            IF p_pool = '' THEN
                SELECT count(*), min(name) INTO v_pools, v_pool FROM ip_pools;
                IF v_pools = 0 THEN
                    RAISE EXCEPTION 'no IP pool exists; create one first' USING ERRCODE = 'SG412';
                ELSIF v_pools > 1 THEN
                    RAISE EXCEPTION 'pool: % pools exist; name one', v_pools USING ERRCODE = 'SG400';
                END IF;
            ELSE
                SELECT name INTO v_pool FROM ip_pools WHERE name = p_pool;
                IF v_pool IS NULL THEN
                    RAISE EXCEPTION 'no IP pool %', p_pool USING ERRCODE = 'SG404';
                END IF;
            END IF;

            -- One pass over the request: instances that do not exist, and those without an address yet.
            SELECT array_agg(t.u) FILTER (WHERE i.id IS NULL),
                   array_agg(t.u ORDER BY t.ord) FILTER (WHERE i.id IS NOT NULL AND a.instance IS NULL)
            INTO v_unknown, v_missing
            FROM unnest(p_instances) WITH ORDINALITY AS t(u, ord)
            LEFT JOIN instances i ON i.id = t.u
            LEFT JOIN ip_addresses a ON a.instance = t.u;
            IF v_unknown IS NOT NULL THEN
                RAISE EXCEPTION 'no instance %', array_to_string(v_unknown[1:5], ', ')
                    || CASE WHEN cardinality(v_unknown) > 5 THEN format(' (and %s more)', cardinality(v_unknown) - 5) ELSE '' END
                    USING ERRCODE = 'SG404';
            END IF;

            IF v_missing IS NOT NULL THEN
                WITH wanted AS (
                    SELECT t.u AS id, t.ord AS n FROM unnest(v_missing) WITH ORDINALITY AS t(u, ord)
                ), free AS (
                    SELECT c.address, row_number() OVER (ORDER BY c.released_at NULLS FIRST, c.address) AS n
                    FROM (SELECT a.address, a.released_at FROM ip_addresses a
                          WHERE a.pool = v_pool AND a.instance IS NULL AND NOT a.reserved
                          ORDER BY a.released_at NULLS FIRST, a.address
                          LIMIT cardinality(v_missing) FOR UPDATE SKIP LOCKED) AS c
                )
                UPDATE ip_addresses AS a SET instance = w.id, allocated_at = now()
                FROM wanted w JOIN free f ON f.n = w.n
                WHERE a.address = f.address;
                GET DIAGNOSTICS v_got = ROW_COUNT;
                IF v_got < cardinality(v_missing) THEN
                    RAISE EXCEPTION 'IP pool % has % free addresses for % instances', v_pool, v_got, cardinality(v_missing)
                        USING ERRCODE = 'SG429';
                END IF;
            END IF;

            RETURN QUERY
                SELECT a.instance, host(a.address), a.pool, masklen(p.cidr), coalesce(host(p.gateway), ''),
                       a.instance = ANY(coalesce(v_missing, '{}'::uuid[]))
                FROM unnest(p_instances) WITH ORDINALITY AS t(u, ord)
                JOIN ip_addresses a ON a.instance = t.u
                JOIN ip_pools p ON p.name = a.pool
                ORDER BY t.ord;
        END
        $$;
        """)
