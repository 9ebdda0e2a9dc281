-- The audit log (issue 5): security-relevant events, append-only and hash-chained. Each row's
-- `hash` is the SHA-256 of the previous row's hash and this row's fields, so changing,
-- removing or reordering rows breaks the chain (`thingbase audit verify`).

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    -- Microseconds since the epoch.
    at INTEGER NOT NULL,
    -- Who: `user:<id>`, `token:<id>`, `anonymous`, `server`, or the name a failed sign-in gave.
    actor TEXT NOT NULL,
    event TEXT NOT NULL,
    -- JSON with the event's particulars; never a secret.
    detail TEXT NOT NULL,
    previous_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
