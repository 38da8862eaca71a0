-- The incident log (event sourcing) and a summary row per incident.
--
-- incident_events is the source of truth: one row per accepted domain event, never changed.
-- incidents is derived from it, written in the same transaction as each append, so open incidents
-- and report ranges can be found without replaying every log.

CREATE TABLE incident_events (
    seq          bigserial PRIMARY KEY,                -- global append order
    incident_id  text NOT NULL,
    version      integer NOT NULL CHECK (version >= 1), -- 1, 2, 3 ... per incident, no gaps
    type         text NOT NULL,
    ts           bigint NOT NULL,                      -- epoch ms, device/business time of the event
    recorded_at  timestamptz NOT NULL DEFAULT now(),   -- when the hub stored it
    data         jsonb NOT NULL,                       -- the event's to_dict()
    -- Optimistic concurrency: two writers appending at the same version cannot both win.
    -- Its index also serves loading one incident in order.
    CONSTRAINT incident_events_version_key UNIQUE (incident_id, version)
);
CREATE INDEX incident_events_ts_idx ON incident_events (ts);

-- Append-only is a promise: refuse UPDATE, DELETE and TRUNCATE, whoever asks.
CREATE FUNCTION incident_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'incident_events is append-only: % is refused', TG_OP;
END
$$;
CREATE TRIGGER incident_events_append_only BEFORE UPDATE OR DELETE ON incident_events
    FOR EACH ROW EXECUTE FUNCTION incident_events_refuse_change();
CREATE TRIGGER incident_events_no_truncate BEFORE TRUNCATE ON incident_events
    FOR EACH STATEMENT EXECUTE FUNCTION incident_events_refuse_change();

CREATE TABLE incidents (
    incident_id  text PRIMARY KEY,
    category     text NOT NULL,
    priority     smallint NOT NULL,
    status       text NOT NULL,            -- open | diverted | closed (Incident.status)
    policy       text,
    lat          double precision NOT NULL,
    lon          double precision NOT NULL,
    received_at  bigint NOT NULL,          -- epoch ms the call was received
    closed_at    bigint,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incidents_received_idx ON incidents (received_at);
CREATE INDEX incidents_status_idx ON incidents (status, received_at);

-- Readable incident ids (I20261123-000042) draw their number from here.
CREATE SEQUENCE incident_number_seq;
