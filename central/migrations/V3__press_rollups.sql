-- Presses counted per site, zone, UTC quarter hour, score and counted/not
-- counted: what reports read instead of scanning every press. (Not per
-- terminal: a terminal has a press or two per quarter hour, and rows per
-- terminal would be about as many as presses; per-terminal figures read
-- `presses` by its (site, received_at) index.)
--
-- The quarter hour is that of coalesce(pressed_at, received_at), the time
-- reports place a press by. Every time zone in use is a whole number of
-- quarter hours from UTC, so a site's local hours and days begin on a
-- quarter hour: figures per local hour or day from these rows equal those
-- from the presses themselves, whatever the site's zone is (or becomes
-- later), across daylight-saving changes too.
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
-- Reports read a period across sites.
CREATE INDEX press_rollups_by_quarter ON press_rollups (quarter);

-- Kept in the same transaction as the presses, by whatever inserts them
-- (the consumer's COPY, its INSERT ... ON CONFLICT DO NOTHING for a
-- redelivered batch, an operator's SQL): the transition table holds only
-- the rows actually inserted, so a redelivered press is counted once.
-- Sorted, so two consumers' transactions lock rollup rows in one order.
CREATE FUNCTION press_rollups_add() RETURNS trigger
LANGUAGE plpgsql AS $$
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
