/// Instance tokens are kept only as their SHA-256: a copy of the database names no instance's token. A token
/// is made when the instance's agent asks (IssueToken), and each binding revokes the one before.
let m0019TokenHashes = Migration(
    version: 19, name: "instance tokens kept as hashes",
    sql: """
        ALTER TABLE instances ADD COLUMN token_hash text UNIQUE;
        UPDATE instances SET token_hash = encode(sha256(convert_to(token, 'UTF8')), 'hex') WHERE token IS NOT NULL;
        ALTER TABLE instances DROP COLUMN token;
        """)
