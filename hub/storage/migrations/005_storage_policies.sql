-- What the storage set-up applied, and why: the storage mode of the fixes table and every retention or
-- compression window in force. Rewritten at every start from the configuration; a change is logged.
CREATE TABLE storage_policies (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Retention of the device logs deletes by arrival time (the hub's clock, not the device's) in bounded batches.
CREATE INDEX rejects_received_idx ON rejects (received_at);
CREATE INDEX device_status_received_idx ON device_status (received_at);
CREATE INDEX device_events_received_idx ON device_events (received_at);
