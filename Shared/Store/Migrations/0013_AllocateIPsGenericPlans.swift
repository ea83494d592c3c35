/// sigma_allocate_ips() planned once per connection, not once per call.
///
/// Migration 6 forced a custom plan for every statement of every call: planning was half the function's time
/// (perf during `sigma-bench alloc`). The generic plans are the ones wanted at any batch size: the free-address
/// pick walks the partial index `ip_addresses_free` and stops at the LIMIT, whatever number the LIMIT is, and
/// the request is joined through unique indexes. Left on `auto`, PostgreSQL would keep choosing custom plans
/// (the generic plan's estimate of an unknown LIMIT is 10% of the pool), so the generic plan is forced.
let m0013AllocateIPsGenericPlans = Migration(
    version: 13, name: "allocator: sigma_allocate_ips() with generic plans",
    sql: """
        ALTER FUNCTION sigma_allocate_ips(uuid[], text) SET plan_cache_mode = force_generic_plan;
        """)
