/// The allocator's host ports: a range per node (default 20000–32767) and one row per port in use, so
/// that no two instances can hold one node:port.
let m0004HostPorts = Migration(
    version: 4, name: "allocator: host port ranges and host ports",
    sql: """
        CREATE TABLE node_port_ranges (
            node        text PRIMARY KEY REFERENCES nodes(name) ON DELETE CASCADE,
            first_port  integer NOT NULL CHECK (first_port BETWEEN 1 AND 65535),
            last_port   integer NOT NULL CHECK (last_port BETWEEN first_port AND 65535),
            reserved    integer[] NOT NULL DEFAULT '{}'
        );

        CREATE TABLE host_ports (
            node          text NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
            port          integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
            instance      uuid NOT NULL,
            allocated_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (node, port)
        );
        CREATE INDEX host_ports_instance ON host_ports (instance, node);
        """)
