-- Principals (issue 5): users with their roles per project, and API tokens. Secrets are stored
-- only as hashes: Argon2id PHC strings for passwords, SHA-256 hex for tokens.

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- NULL: the user signs in with tokens only.
    password_hash TEXT,
    hub_admin INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE memberships (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'contributor', 'editor', 'admin')),
    PRIMARY KEY (user_id, project_id)
);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    -- 'user': everything its user may do; 'grants': only its own grants, within the user's.
    scope TEXT NOT NULL CHECK (scope IN ('user', 'grants')),
    created_at INTEGER NOT NULL,
    -- Microseconds since the epoch; NULL never expires.
    expires_at INTEGER,
    revoked_at INTEGER
);

CREATE TABLE token_grants (
    token_id INTEGER NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'contributor', 'editor', 'admin')),
    PRIMARY KEY (token_id, project_id)
);
