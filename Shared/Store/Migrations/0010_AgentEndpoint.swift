/// Where each node's agent serves its own methods (logs of its instances), so operators' tools find it.
let m0010AgentEndpoint = Migration(
    version: 10, name: "nodes: agent endpoint",
    sql: """
        ALTER TABLE nodes ADD COLUMN agent_endpoint text NOT NULL DEFAULT '';
        """)
