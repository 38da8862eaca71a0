-- Units, devices, tokens, status history and rejects.
-- The fixes table is created by the partitioning step (TimescaleDB or native).

CREATE TABLE units (
    unit_id       text PRIMARY KEY,
    name          text NOT NULL,
    kind          text NOT NULL,
    home_lat      double precision,
    home_lon      double precision,
    capabilities  jsonb NOT NULL DEFAULT '[]',
    status        text NOT NULL DEFAULT 'available',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    device_id   text PRIMARY KEY,
    unit_id     text REFERENCES units (unit_id) ON DELETE SET NULL,
    kind        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_unit_idx ON devices (unit_id);

CREATE TABLE tokens (
    token_id    bigserial PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'dispatcher', 'viewer', 'drone_operator', 'device')),
    hash        text NOT NULL UNIQUE,
    device_id   text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE device_status (
    device_id    text NOT NULL,
    ts           bigint NOT NULL,
    state        text NOT NULL,
    payload      jsonb NOT NULL,
    received_at  bigint NOT NULL,
    PRIMARY KEY (device_id, ts, state)
);

CREATE TABLE device_events (
    device_id    text NOT NULL,
    ts           bigint NOT NULL,
    type         text NOT NULL,
    data         jsonb NOT NULL,
    received_at  bigint NOT NULL,
    -- QoS 1 delivers at least once: a re-delivered event is stored once.
    PRIMARY KEY (device_id, ts, type)
);

CREATE TABLE rejects (
    reject_id    bigserial PRIMARY KEY,
    received_at  bigint NOT NULL,
    topic        text NOT NULL,
    device_id    text,
    reason       text NOT NULL,
    detail       text NOT NULL,
    size         integer NOT NULL,
    raw          bytea NOT NULL
);
CREATE INDEX rejects_reason_idx ON rejects (reason, received_at);
