-- Presses counted per site, zone, UTC quarter hour, score and counted/not
-- counted: what reports read instead of scanning every press. (Not per
-- terminal: a terminal has a press or two per quarter hour, and rows per
-- terminal would be about as many as presses; per-terminal figures read
-- `presses` by its (site, received_at) index.)
--
-- The quarter hour is that of coalesce(pressed_at, received_at), the time
-- reports place a press by. In the tz database's rules from October 2022
-- on, every zone is a whole number of quarter hours from UTC and changes
-- its clocks on a UTC quarter hour, so a site's local hours and days begin
-- on one: figures per local hour or day from these rows equal those from
-- the presses themselves, whatever the site's zone is (or becomes later),
-- across daylight-saving changes too. (Earlier dates in a few zones, e.g.
-- St John's changing clocks at 00:01 until 2011, can differ by a minute's
-- presses.)

-- The backfill below may take a while on a large table.
SET LOCAL statement_timeout = 0;
CREATE TABLE press_rollups (
    site     text NOT NULL,
    -- '' for presses of no zone.
    zone     text NOT NULL,
    quarter  timestamptz NOT NULL,
    score    smallint NOT NULL CHECK (score BETWEEN 1 AND 4),
    counted  boolean NOT NULL,
    presses  bigint NOT NULL,
    PRIMARY KEY (site, quarter, zone, score, counted)
);

-- Kept in the same transaction as the presses, by whatever inserts them
-- (the consumer's COPY, its INSERT ... ON CONFLICT DO NOTHING for a
-- redelivered batch, an operator's SQL): the transition table holds only
-- the rows actually inserted, so a redelivered press is counted once.
-- Sorted, so two consumers' transactions lock rollup rows in one order
-- (each transaction inserts its presses in one statement). Runs with the
-- owner's rights, so a role allowed to insert presses needs nothing more.
-- UPDATE, DELETE and TRUNCATE of presses leave the rollups as they are
-- (PROTOCOL.md says how to rebuild them).
CREATE FUNCTION press_rollups_add() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO press_rollups AS r (site, zone, quarter, score, counted, presses)
    SELECT site, coalesce(zone, ''),
           date_bin('15 minutes', coalesce(pressed_at, received_at), timestamptz '2000-01-01 00:00:00+00'),
           score, counted, count(*)
    FROM inserted
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 3, 2, 4, 5
    ON CONFLICT (site, quarter, zone, score, counted)
    DO UPDATE SET presses = r.presses + excluded.presses;
    RETURN NULL;
END;
$$;

CREATE TRIGGER presses_rollup
    AFTER INSERT ON presses
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION press_rollups_add();

-- A database made before this version: its presses, counted once.
INSERT INTO press_rollups (site, zone, quarter, score, counted, presses)
SELECT site, coalesce(zone, ''),
       date_bin('15 minutes', coalesce(pressed_at, received_at), timestamptz '2000-01-01 00:00:00+00'),
       score, counted, count(*)
FROM presses
GROUP BY 1, 2, 3, 4, 5;

-- Reports read a period across sites.
CREATE INDEX press_rollups_by_quarter ON press_rollups (quarter);
ANALYZE press_rollups;
