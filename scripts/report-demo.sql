-- Demonstration data for the central web view's screenshots in the
-- README (tests/tests/central_web.rs, `readme_screenshots`): eight sites in
-- their own time zones, 30,000 presses each over the year to 2026-12-06,
-- unhappier at lunch and in the evening, alerts at one site, terminal
-- health everywhere. Not used by any other test.
INSERT INTO sites (site, time_zone, state, version) VALUES
 ('arena','Europe/London','online','0.1.0'),('airport-t2','Europe/Berlin','online','0.1.0'),
 ('harbour','Europe/London','online','0.1.0'),('mall-north','America/New_York','online','0.1.0'),
 ('stadium-east','Europe/Madrid','online','0.1.0'),('station','Europe/Paris','online','0.1.0'),
 ('museum','Europe/Rome','online','0.1.0'),('expo','Europe/Amsterdam','online','0.1.0');
INSERT INTO zones VALUES ('arena','food','Food court'),('arena','gate-a','Gate A'),('arena','toilets','Toilets north'),
 ('airport-t2','security','Security lanes'),('airport-t2','gates','Gates B'),('station','hall','Main hall');
CREATE TEMP TABLE bias(site text, b float, zones text[]);
INSERT INTO bias VALUES ('arena',0.55,'{food,gate-a,toilets}'),('airport-t2',0.35,'{security,gates}'),('harbour',0.7,'{}'),
 ('mall-north',0.6,'{}'),('stadium-east',0.5,'{}'),('station',0.4,'{hall}'),('museum',0.8,'{}'),('expo',0.65,'{}');
INSERT INTO presses (id, site, terminal, zone, boot, seq, button, score, pressed_at, received_at, counted)
SELECT site||':t'||term||':0:'||g, site, 't'||term, zone, 0, g,
       (ARRAY['very_unhappy','unhappy','happy','very_happy'])[score], score, at, at, true
FROM (
  SELECT b.site, g, (g % 4) AS term,
         CASE WHEN cardinality(b.zones) > 0 THEN b.zones[1 + g % cardinality(b.zones)] END AS zone,
         at,
         CASE WHEN r < 0.3 THEN 1 WHEN r < 0.45 THEN 2 WHEN r < 0.7 THEN 3 ELSE 4 END::int2 AS score
  FROM bias b, generate_series(1, 30000) g,
       LATERAL (SELECT '2025-12-08T00:00Z'::timestamptz + (floor(random()*364 + g*0) || ' days')::interval
                       + ((8 + floor(random()*14)) || ' hours')::interval + (floor(random()*60 + b.b*0) || ' minutes')::interval AS at) t,
       LATERAL (SELECT random()*0.6 + b.b*0.45 + 0*g
                       - CASE WHEN extract(hour FROM t.at) IN (12, 13, 18) THEN 0.15 ELSE 0 END
                       + 0.08*sin(extract(epoch FROM t.at)/86400/25.0) + g*0 AS r) q
) x;
INSERT INTO alerts (site, id, terminal, zone, kind, severity, state, raised_at, cleared_at, acknowledged_at, detail, document)
SELECT 'arena', g, '', (ARRAY['food','gate-a','toilets'])[1 + g % 3], 'zone_unhappy', 'critical',
       CASE WHEN g = 40 THEN 'raised' ELSE 'cleared' END,
       '2026-11-30T11:00Z'::timestamptz + (g * 4 || ' hours')::interval,
       CASE WHEN g = 40 THEN NULL ELSE '2026-11-30T11:00Z'::timestamptz + (g * 4 || ' hours')::interval + ((5 + g % 30) || ' minutes')::interval END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE '2026-11-30T11:00Z'::timestamptz + (g * 4 || ' hours')::interval + ((1 + g % 7) || ' minutes')::interval END,
       'unhappy', '{}'
FROM generate_series(1, 40) g;
INSERT INTO terminal_health (site, terminal, online, last_seen, firmware, battery_mv, rssi_dbm, document)
SELECT b.site, 't'||t, NOT (b.site = 'arena' AND t = 2), '2026-12-07T08:00Z', '0.3.1', 3900 - t*120, -55 - t*6, '{}'
FROM bias b, generate_series(0, 3) t;
