-- The alert lifecycle (gateway alerting): who acknowledged and when,
-- escalation, closing. `revision` orders the documents of one alert: a
-- row only ever moves to a higher revision. Documents from gateways that
-- predate the lifecycle have revision 0.
ALTER TABLE alerts
    ADD COLUMN lifecycle       text,
    ADD COLUMN revision        integer NOT NULL DEFAULT 0,
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text,
    ADD COLUMN ack_note        text,
    ADD COLUMN escalated_at    timestamptz,
    ADD COLUMN closed_at       timestamptz,
    ADD COLUMN reopened        integer NOT NULL DEFAULT 0;

-- Response figures by zone and period.
CREATE INDEX alerts_raised_at ON alerts (site, raised_at);
