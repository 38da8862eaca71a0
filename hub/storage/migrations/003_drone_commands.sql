-- The audit trail of drone commands: who asked a drone to do what, when, and what the drone answered.
-- Append-only; one row per command, written when the drone's answer (or the failure) is known.

CREATE TABLE drone_commands (
    id           bigserial PRIMARY KEY,
    ts           bigint NOT NULL,                 -- epoch ms, when the hub was asked
    drone_id     text NOT NULL,
    command      text NOT NULL,                   -- goto, rtl, land, dispatch, ...
    params       jsonb NOT NULL DEFAULT '{}',
    principal    text NOT NULL,                   -- the token's name, or "system"
    role         text NOT NULL,
    incident_id  text,
    result       text NOT NULL,                   -- accepted, rejected, timeout, link_lost, failed
    detail       text NOT NULL DEFAULT '',
    done_at      bigint NOT NULL                  -- epoch ms, when the answer was known
);
CREATE INDEX drone_commands_drone_ts_idx ON drone_commands (drone_id, ts);
