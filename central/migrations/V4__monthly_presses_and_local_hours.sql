-- Pressline central schema, version 4: presses partitioned by month of
-- `received_at` (retention drops whole months), and `press_hours`, the
-- counts per site, zone, terminal and local hour that reports read,
-- replacing version 3's `press_rollups`. Documented in PROTOCOL.md
-- ("Central tables").

-- Advisory locks: (7374, hashtext(site)) a site's press_hours, shared by
-- inserts and exclusive for a zone change; (7375, 1) making and dropping
-- partitions, shared by a zone change's rebuild.

-- The move below may take a while on a large table (it copies nothing:
-- the existing table becomes one partition).
SET LOCAL statement_timeout = 0;

-- A site's time zone the database cannot use is not taken (the site keeps
-- the zone it had; a new site gets NULL, UTC), with a warning: every local
-- hour below depends on it, and one unknown name must not make a site's
-- presses fail to insert.
CREATE FUNCTION sites_time_zone_known() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.time_zone IS NOT NULL THEN
        BEGIN
            PERFORM now() AT TIME ZONE NEW.time_zone;
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE WARNING 'site %: time zone % is unknown to this database; kept %',
                NEW.site, NEW.time_zone, coalesce(OLD.time_zone, 'UTC');
            NEW.time_zone := CASE WHEN TG_OP = 'UPDATE' THEN OLD.time_zone END;
        END;
    END IF;
    RETURN NEW;
END;
$$;
-- Earlier versions stored the zone as sent.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT site, time_zone FROM sites WHERE time_zone IS NOT NULL LOOP
        BEGIN
            PERFORM now() AT TIME ZONE r.time_zone;
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE WARNING 'site %: time zone % is unknown to this database; UTC is used',
                r.site, r.time_zone;
            UPDATE sites SET time_zone = NULL WHERE site = r.site;
        END;
    END LOOP;
END;
$$;
CREATE TRIGGER sites_time_zone_known
    BEFORE INSERT OR UPDATE OF time_zone ON sites
    FOR EACH ROW EXECUTE FUNCTION sites_time_zone_known();

-- ------------------------------------------------------------ retention
-- One row: how many whole months of presses are kept before the current
-- (UTC) month; NULL keeps everything. `kept_from` is the start of the
-- oldest month still held once anything was dropped.
CREATE TABLE press_retention (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    keep_months integer CHECK (keep_months BETWEEN 1 AND 1200),
    kept_from   timestamptz
);
INSERT INTO press_retention DEFAULT VALUES;

-- ------------------------------------------------- presses, by month
DROP TRIGGER presses_rollup ON presses;
DROP FUNCTION press_rollups_add();
DROP TABLE press_rollups;

ALTER TABLE presses RENAME TO presses_before_v4;
ALTER INDEX presses_by_site_time RENAME TO presses_before_v4_by_site_time;
ALTER TABLE presses_before_v4 RENAME CONSTRAINT presses_pkey TO presses_before_v4_pkey;

-- Every press id held, once: the one key across months (a unique key on
-- a partitioned table must include the partition key, and a press a
-- gateway forgot and stored again comes with another received_at). Rows
-- go in with their presses (the trigger below), so an insert of a press
-- already held fails (23505) whoever makes it; rows of dropped months go
-- with them.
CREATE TABLE press_ids (
    id          text PRIMARY KEY,
    received_at timestamptz NOT NULL
);

CREATE TABLE presses (
    id                 text NOT NULL,
    site               text NOT NULL,
    terminal           text NOT NULL,
    zone               text,
    boot               bigint NOT NULL,
    seq                bigint NOT NULL,
    button             text NOT NULL,
    -- Named as version 1's, which the partition below has.
    score              smallint NOT NULL
                       CONSTRAINT presses_score_check CHECK (score BETWEEN 1 AND 4),
    pressed_at         timestamptz,
    received_at        timestamptz NOT NULL,
    counted            boolean NOT NULL,
    not_counted_reason text,
    inserted_at        timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (received_at);
CREATE INDEX presses_by_site_time ON presses (site, received_at);
-- Rows of a month that has no partition yet (an operator's INSERT; the
-- consumer makes the month first): moved to the month's own partition
-- when it is made.
CREATE TABLE presses_default PARTITION OF presses DEFAULT;

-- The presses of earlier versions stay where they are (nothing copied),
-- as one partition up to the end of the month of the newest, at most the
-- current month (dropped as a whole once that month leaves the
-- retention). Presses a gateway's wrong clock dated later wait in
-- presses_default.
INSERT INTO press_ids SELECT id, received_at FROM presses_before_v4;
DO $$
DECLARE
    upper_bound timestamptz;
BEGIN
    SELECT max(received_at) INTO upper_bound FROM presses_before_v4;
    IF upper_bound IS NULL THEN
        DROP TABLE presses_before_v4;
        RETURN;
    END IF;
    -- (least() alone would turn an empty table's NULL into now().)
    upper_bound := (date_trunc('month', least(upper_bound, now()) AT TIME ZONE 'UTC') + interval '1 month')
                   AT TIME ZONE 'UTC';
    WITH later AS (DELETE FROM presses_before_v4 WHERE received_at >= upper_bound RETURNING *)
    INSERT INTO presses_default SELECT * FROM later;
    EXECUTE format('ALTER TABLE presses ATTACH PARTITION presses_before_v4 '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', upper_bound);
END;
$$;

-- The partition holding `at`'s month (`presses_YYYY_MM`, UTC), made when
-- missing, with the month's rows from presses_default moved into it.
-- Refuses (22008) a month that starts more than a day ahead of the
-- database's clock or ends before the kept history: a gateway's wrong
-- clock must not leave partitions behind. The consumer runs it before
-- inserting (a partition cannot be made by the insert itself). Attaching
-- lets inserts into other months go on meanwhile.
CREATE FUNCTION press_partition_for(at timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    month timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
    name text := format('presses_%s', to_char(month, 'YYYY_MM'));
    lo timestamptz := month AT TIME ZONE 'UTC';
    hi timestamptz := (month + interval '1 month') AT TIME ZONE 'UTC';
    keep integer;
    kept timestamptz;
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    IF month AT TIME ZONE 'UTC' > now() + interval '1 day' THEN
        RAISE EXCEPTION USING ERRCODE = 'datetime_field_overflow',
            MESSAGE = format('received_at %s is more than a day ahead of the database clock', at);
    END IF;
    -- A clock reset to 1970 is no press.
    IF month < timestamp '2000-01-01' THEN
        RAISE EXCEPTION USING ERRCODE = 'datetime_field_overflow',
            MESSAGE = format('received_at %s is before 2000', at);
    END IF;
    SELECT keep_months, kept_from INTO keep, kept FROM press_retention;
    IF keep IS NOT NULL
       AND month + interval '1 month' <= date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => keep) THEN
        RAISE EXCEPTION USING ERRCODE = 'datetime_field_overflow',
            MESSAGE = format('received_at %s is before the kept history (%s whole months before the current one)', at, keep);
    END IF;
    -- A month dropped stays dropped, whatever the setting is now: its
    -- presses are counted in press_hours and their ids are gone.
    IF hi <= kept THEN
        RAISE EXCEPTION USING ERRCODE = 'datetime_field_overflow',
            MESSAGE = format('received_at %s is before the kept history (months before %s were dropped)', at, kept);
    END IF;
    -- One maker at a time: two consumers meeting a new month together.
    PERFORM pg_advisory_xact_lock(7375, 1);
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE %I (LIKE presses INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
        -- Inserts into presses_default in flight finish first (else the
        -- attach would meet rows not moved); not through `presses`: these
        -- rows are counted and their ids held already.
        LOCK TABLE presses_default IN SHARE ROW EXCLUSIVE MODE;
        EXECUTE format('WITH moved AS (DELETE FROM presses_default '
                       'WHERE received_at >= %L AND received_at < %L RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved', lo, hi, name);
        EXECUTE format('ALTER TABLE presses ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       name, lo, hi);
    EXCEPTION
        WHEN invalid_object_definition THEN
            -- Inside the partition of an earlier version's presses.
            RETURN 'presses_before_v4';
        WHEN duplicate_table THEN
            -- Made by another session since the look above.
            RETURN name;
    END;
    RETURN name;
END;
$$;

-- Partitions of presses and their ranges, oldest first (NULL: open
-- ended; both NULL for presses_default).
CREATE VIEW press_partitions AS
SELECT c.relname::text AS name,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM $r$FROM \('([^']+)'\)$r$)::timestamptz AS from_at,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM $r$TO \('([^']+)'\)$r$)::timestamptz AS to_at
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'presses'::regclass
ORDER BY to_at NULLS LAST;

-- Drops the partitions wholly before the kept months; returns their
-- names. Their rows in press_hours stay (reports keep their figures).
CREATE FUNCTION press_partitions_drop_expired() RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    keep integer;
    cutoff timestamptz;
    part record;
BEGIN
    SELECT keep_months INTO keep FROM press_retention;
    IF keep IS NULL THEN
        RETURN;
    END IF;
    cutoff := (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => keep)) AT TIME ZONE 'UTC';
    PERFORM pg_advisory_xact_lock(7375, 1);
    FOR part IN SELECT name, to_at FROM press_partitions WHERE to_at <= cutoff LOOP
        -- Detached first: inserts into it in flight finish, later ones
        -- wait for this transaction and then meet kept_from. Its ids go
        -- by its own rows (press_ids' key), not a scan of all.
        EXECUTE format('ALTER TABLE presses DETACH PARTITION %I', part.name);
        UPDATE press_retention SET kept_from = greatest(kept_from, part.to_at);
        EXECUTE format('DELETE FROM press_ids i USING %I p WHERE i.id = p.id', part.name);
        EXECUTE format('DROP TABLE %I', part.name);
        RETURN NEXT part.name;
    END LOOP;
    LOCK TABLE presses_default IN SHARE ROW EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM presses_default WHERE received_at < cutoff) THEN
        UPDATE press_retention SET kept_from = greatest(kept_from, cutoff);
        DELETE FROM press_ids i USING presses_default p
        WHERE p.received_at < cutoff AND i.id = p.id;
        DELETE FROM presses_default WHERE received_at < cutoff;
        RETURN NEXT 'presses_default (rows before ' || cutoff || ')';
    END IF;
END;
$$;

-- A row for a month already dropped would be counted again and dropped
-- at the next round: refused like a partition for it (a consumer that
-- knew the month before it was dropped sends such rows here).
CREATE FUNCTION presses_default_kept() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.received_at < (SELECT kept_from FROM press_retention) THEN
        RAISE EXCEPTION USING ERRCODE = 'datetime_field_overflow',
            MESSAGE = format('received_at %s is before the kept history', NEW.received_at);
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER presses_default_kept
    BEFORE INSERT ON presses_default
    FOR EACH ROW EXECUTE FUNCTION presses_default_kept();

-- ------------------------------------------------------- local hours
-- Presses per site, zone ('' for none), terminal, local hour (wall clock
-- in the site's time zone, NULL zone = UTC) and counted flag, one column
-- per score. The hour is that of coalesce(pressed_at, received_at), the
-- time reports place a press by. Hour first in the key: reports read a
-- period across sites.
CREATE TABLE press_hours (
    hour         timestamp NOT NULL,
    site         text NOT NULL,
    zone         text NOT NULL,
    terminal     text NOT NULL,
    counted      boolean NOT NULL,
    very_unhappy integer NOT NULL DEFAULT 0,
    unhappy      integer NOT NULL DEFAULT 0,
    happy        integer NOT NULL DEFAULT 0,
    very_happy   integer NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, site, zone, terminal, counted)
);

-- A zone name as the database can use it: one it no longer knows (a
-- tzdata upgrade, a restore on another host) is UTC, with a warning,
-- rather than every press of the site failing.
CREATE FUNCTION press_zone(name text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF name IS NULL THEN
        RETURN 'UTC';
    END IF;
    PERFORM now() AT TIME ZONE name;
    RETURN name;
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE WARNING 'time zone % is unknown to this database; UTC is used', name;
    RETURN 'UTC';
END;
$$;

-- Each inserted press: its id into press_ids (a press already held fails
-- the statement, 23505), its count into press_hours. A site's rows follow
-- its time zone: inserts take a shared lock per site and a zone change an
-- exclusive one (below), so no insert computes hours with a zone being
-- replaced while its rows are rebuilt.
CREATE FUNCTION presses_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO press_ids (id, received_at)
    SELECT id, received_at FROM inserted ORDER BY id;
    PERFORM pg_advisory_xact_lock_shared(7374, hashtext(site))
    FROM (SELECT DISTINCT site FROM inserted ORDER BY site) s;
    INSERT INTO press_hours AS h (hour, site, zone, terminal, counted,
                                  very_unhappy, unhappy, happy, very_happy)
    SELECT date_trunc('hour', coalesce(i.pressed_at, i.received_at) AT TIME ZONE z.tz),
           i.site, coalesce(i.zone, ''), i.terminal, i.counted,
           count(*) FILTER (WHERE i.score = 1), count(*) FILTER (WHERE i.score = 2),
           count(*) FILTER (WHERE i.score = 3), count(*) FILTER (WHERE i.score = 4)
    FROM inserted i
    JOIN (SELECT d.site, press_zone(s.time_zone) AS tz
          FROM (SELECT DISTINCT site FROM inserted) d LEFT JOIN sites s USING (site)
          OFFSET 0) z USING (site)
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (hour, site, zone, terminal, counted) DO UPDATE SET
        very_unhappy = h.very_unhappy + excluded.very_unhappy,
        unhappy = h.unhappy + excluded.unhappy,
        happy = h.happy + excluded.happy,
        very_happy = h.very_happy + excluded.very_happy;
    RETURN NULL;
END;
$$;

-- Kept in the same transaction as the presses, by whatever inserts them
-- (the consumer's COPY, its INSERT for a redelivered batch, an operator's
-- SQL): the transition table holds only the rows actually inserted.
-- UPDATE, DELETE and TRUNCATE of presses leave press_hours and press_ids
-- as they are (PROTOCOL.md says how to rebuild them).
CREATE TRIGGER presses_inserted
    AFTER INSERT ON presses
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION presses_inserted();

-- A site's zone changed (or its first status arrived after its presses):
-- its rows are rebuilt in the new zone from its presses, when every press
-- counted in them is still held. Otherwise (months dropped, presses
-- deleted by hand) they keep the zone they were made in and presses from
-- now on use the new one: each press is still counted once.
CREATE FUNCTION press_hours_rezone() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    new_zone text := press_zone(NEW.time_zone);
    counted_presses bigint;
    held_presses bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND press_zone(OLD.time_zone) = new_zone THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(7374, hashtext(NEW.site));
    -- No month dropped between the count and the rebuild.
    PERFORM pg_advisory_xact_lock_shared(7375, 1);
    SELECT coalesce(sum(very_unhappy + unhappy + happy + very_happy), 0) INTO counted_presses
    FROM press_hours WHERE site = NEW.site;
    SELECT count(*) INTO held_presses FROM presses WHERE site = NEW.site;
    IF counted_presses <> held_presses THEN
        RAISE WARNING 'site %: % presses counted, % held; its hours keep the zone they were made in',
            NEW.site, counted_presses, held_presses;
        RETURN NULL;
    END IF;
    DELETE FROM press_hours WHERE site = NEW.site;
    INSERT INTO press_hours (hour, site, zone, terminal, counted,
                             very_unhappy, unhappy, happy, very_happy)
    SELECT date_trunc('hour', coalesce(pressed_at, received_at) AT TIME ZONE new_zone),
           site, coalesce(zone, ''), terminal, counted,
           count(*) FILTER (WHERE score = 1), count(*) FILTER (WHERE score = 2),
           count(*) FILTER (WHERE score = 3), count(*) FILTER (WHERE score = 4)
    FROM presses
    WHERE site = NEW.site
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5;
    RETURN NULL;
END;
$$;

CREATE TRIGGER sites_rezone_hours_insert
    AFTER INSERT ON sites
    FOR EACH ROW WHEN (NEW.time_zone IS NOT NULL)
    EXECUTE FUNCTION press_hours_rezone();
CREATE TRIGGER sites_rezone_hours_update
    AFTER UPDATE OF time_zone ON sites
    FOR EACH ROW WHEN (OLD.time_zone IS DISTINCT FROM NEW.time_zone)
    EXECUTE FUNCTION press_hours_rezone();

-- A database made before this version: its presses, counted once.
INSERT INTO press_hours (hour, site, zone, terminal, counted,
                         very_unhappy, unhappy, happy, very_happy)
SELECT date_trunc('hour', coalesce(p.pressed_at, p.received_at) AT TIME ZONE coalesce(z.tz, 'UTC')),
       p.site, coalesce(p.zone, ''), p.terminal, p.counted,
       count(*) FILTER (WHERE p.score = 1), count(*) FILTER (WHERE p.score = 2),
       count(*) FILTER (WHERE p.score = 3), count(*) FILTER (WHERE p.score = 4)
FROM presses p
-- Each site's zone looked at once, not once a press.
LEFT JOIN (SELECT site, press_zone(time_zone) AS tz FROM sites OFFSET 0) z USING (site)
GROUP BY 1, 2, 3, 4, 5;
ANALYZE press_hours, press_ids;
