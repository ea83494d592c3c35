/// The discovery trigger joins an UPDATE's old and new rows by hash, at every size.
///
/// `sigma_instances_changed()` (migration 8) joins the transition tables `new_rows` and `old_rows` on `id`. Its
/// plan is made once per connection, sized by the first UPDATE that connection runs: after a one-row UPDATE it
/// is a nested loop, and a later UPDATE of 5,000 rows then compared 25 million pairs (3.6 s instead of 0.1 s;
/// the intermittent 10–20 s stall of the scheduler's bind passes). Without nested loops the planner takes a
/// hash join, linear at any size (1 row: 4 ms, 5,000: 0.13 s, 40,000: 0.75 s, whatever came first).
let m0014DiscoveryTriggerHashJoin = Migration(
    version: 14, name: "discovery: the instances trigger joins by hash at any size",
    sql: """
        ALTER FUNCTION sigma_instances_changed() SET enable_nestloop = off;
        """)
