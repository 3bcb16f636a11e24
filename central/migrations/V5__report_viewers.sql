-- Who may read the central web view: one row per viewer, the token kept
-- only as its SHA-256 (`pressline-central viewers add NAME` shows it once).
CREATE TABLE report_viewers (
    name         text PRIMARY KEY,
    token_sha256 bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);
