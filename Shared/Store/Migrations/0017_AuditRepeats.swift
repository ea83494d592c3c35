/// The audit log folds repeats: one entry per distinct call within a batch, with how many there were (a flood
/// of refused calls is a few rows a second, not one per call).
let m0017AuditRepeats = Migration(
    version: 17, name: "audit log: repeats folded into one entry",
    sql: """
        ALTER TABLE audit_log ADD COLUMN repeats integer NOT NULL DEFAULT 1 CHECK (repeats >= 1);
        """)
