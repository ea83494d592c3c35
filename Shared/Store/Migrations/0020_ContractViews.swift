/// What one service reads of another's tables, as views: each table has one owner that alone writes it and
/// names it in SQL (`TableOwnershipTests`), and these views are the contract the others read through. A view
/// depends on its columns, so PostgreSQL refuses to drop or retype one that a reader needs; renaming a column
/// keeps the view, which then needs a new migration to keep its own column names.
///
/// The scheduler's, for Discovery, the config center, the allocator and access control:
/// `instance_directory` (an instance, its node's address and IDC, and its revision's container ports),
/// `app_directory` (live apps), `app_index` (Discovery's per-app index), `node_directory` (registered nodes).
/// The allocator's, for placement: `free_ssds` and `host_port_use` (a node's range size when it has its own
/// range, and its ports in use).
let m0020ContractViews = Migration(
    version: 20, name: "contract views between the services",
    sql: """
        CREATE VIEW instance_directory AS
            SELECT i.id, i.app, i.ordinal, i.ip, i.state, i.ready, coalesce(i.node, '') AS node, i.generation, i.restarts,
                   i.next_retry_at, coalesce(host(n.host_ip), '') AS host_ip, coalesce(n.idc, '') AS idc, i.host_ports,
                   coalesce(r.spec -> 'ports', '[]'::jsonb) AS ports, i.token_hash
            FROM instances i
            LEFT JOIN nodes n ON n.name = i.node
            LEFT JOIN app_revisions r ON r.app = i.app AND r.revision = i.revision;
        CREATE VIEW app_directory AS
            SELECT name, coalesce(spec ->> 'image', '') AS image, jsonb_typeof(spec -> 'config') = 'object' AS has_config
            FROM apps WHERE NOT deleted;
        CREATE VIEW app_index AS SELECT app, revision FROM discovery_index;
        CREATE VIEW node_directory AS SELECT name FROM nodes;
        CREATE VIEW free_ssds AS SELECT node, size_bytes FROM ssds WHERE instance IS NULL AND healthy;
        CREATE VIEW host_port_use AS
            SELECT coalesce(r.node, p.node) AS node, r.last_port - r.first_port + 1 - cardinality(r.reserved) AS range_size,
                   coalesce(p.used, 0) AS used
            FROM node_port_ranges r
            FULL JOIN (SELECT node, count(*) AS used FROM host_ports GROUP BY node) p ON p.node = r.node;
        """)
