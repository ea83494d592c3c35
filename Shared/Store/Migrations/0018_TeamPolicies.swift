/// What an operator allows a team beyond the defaults: for now, apps without the seccomp filter.
let m0018TeamPolicies = Migration(
    version: 18, name: "team policies: seccomp Unconfined only where an operator allows it",
    sql: """
        CREATE TABLE team_policies (
            team                      text PRIMARY KEY,
            allow_seccomp_unconfined  boolean NOT NULL DEFAULT false
        );
        """)
