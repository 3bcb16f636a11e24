-- Reports e-mailed by `pressline-central mail`: one row per subscription,
-- recipient and period. A sender claims a row before sending and marks it
-- sent after, so each report goes out once across restarts and however
-- many senders run. A claim left by a sender that died mid-send is taken
-- over after 10 minutes (that recipient may then get the report twice;
-- none is skipped).
CREATE TABLE report_mailings (
    subscription text NOT NULL,
    recipient    text NOT NULL,
    period_from  date NOT NULL,
    period_to    date NOT NULL,
    claimed_at   timestamptz NOT NULL,
    claimed_by   text NOT NULL,
    sent_at      timestamptz,
    PRIMARY KEY (subscription, recipient, period_from, period_to)
);
