/// Access control: who may call (CURVE keys with a role; agents tied to their node), the token each bound
/// instance proves itself with, and the audit log of write calls.
let m0012Access = Migration(
    version: 12, name: "access: principals, instance tokens, audit log",
    sql: """
        CREATE TABLE principals (
            public_key  text PRIMARY KEY CHECK (length(public_key) = 40),
            name        text NOT NULL UNIQUE CHECK (name <> ''),
            role        text NOT NULL CHECK (role IN ('operator', 'service', 'agent')),
            node        text,
            added_at    timestamptz NOT NULL DEFAULT now(),
            CHECK ((role = 'agent') = (node IS NOT NULL))
        );
        -- A new token at every binding (a new generation), so a fenced old copy's token stops working.
        ALTER TABLE instances ADD COLUMN token text UNIQUE;
        CREATE TABLE audit_log (
            id          bigserial PRIMARY KEY,
            at          timestamptz NOT NULL DEFAULT now(),
            service     text NOT NULL,
            method      text NOT NULL,
            caller      text NOT NULL,
            role        text NOT NULL,
            caller_key  text NOT NULL DEFAULT '',
            status      text NOT NULL,
            subject     text NOT NULL DEFAULT '',
            message     text NOT NULL DEFAULT ''
        );
        CREATE INDEX audit_log_at ON audit_log (at);
        """)
