-- Pressline central schema, version 1. Documented in PROTOCOL.md
-- ("Central tables"); analytics may rely on these tables and columns.
-- Times are timestamptz (UTC instants); local hours come from
-- sites.time_zone with AT TIME ZONE.

CREATE TABLE sites (
    site         text PRIMARY KEY,
    -- IANA zone from the gateway status; NULL when the gateway has only a
    -- fixed offset (reports then use UTC).
    time_zone    text,
    state        text NOT NULL,
    version      text NOT NULL,
    status_since timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE zones (
    site text NOT NULL,
    zone text NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (site, zone)
);

CREATE TABLE presses (
    id                 text PRIMARY KEY,
    site               text NOT NULL,
    terminal           text NOT NULL,
    zone               text,
    boot               bigint NOT NULL,
    seq                bigint NOT NULL,
    button             text NOT NULL,
    score              smallint NOT NULL CHECK (score BETWEEN 1 AND 4),
    pressed_at         timestamptz,
    received_at        timestamptz NOT NULL,
    counted            boolean NOT NULL,
    not_counted_reason text,
    inserted_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX presses_by_site_time ON presses (site, received_at);

-- The latest health document per terminal.
CREATE TABLE terminal_health (
    site       text NOT NULL,
    terminal   text NOT NULL,
    online     boolean NOT NULL,
    last_seen  timestamptz NOT NULL,
    firmware   text,
    battery_mv integer,
    rssi_dbm   integer,
    document   jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, terminal)
);

-- One row per alert; its cleared event fills cleared_at.
CREATE TABLE alerts (
    site       text NOT NULL,
    id         bigint NOT NULL,
    terminal   text NOT NULL,
    zone       text,
    kind       text NOT NULL,
    severity   text NOT NULL,
    state      text NOT NULL,
    raised_at  timestamptz NOT NULL,
    cleared_at timestamptz,
    detail     text NOT NULL,
    document   jsonb NOT NULL,
    PRIMARY KEY (site, id)
);

CREATE TABLE ota_events (
    site     text NOT NULL,
    rollout  bigint NOT NULL,
    event    text NOT NULL,
    terminal text NOT NULL DEFAULT '',
    state    text NOT NULL DEFAULT '',
    at       timestamptz NOT NULL,
    document jsonb NOT NULL,
    PRIMARY KEY (site, rollout, event, terminal, state, at)
);

-- Messages that could not be read (not JSON, unknown schema, bad fields):
-- kept with the reason, so nothing that reached the queue is lost.
CREATE TABLE rejected_messages (
    routing_key text NOT NULL,
    reason      text NOT NULL,
    body        bytea NOT NULL,
    body_md5    text GENERATED ALWAYS AS (md5(body)) STORED,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (routing_key, body_md5)
);
