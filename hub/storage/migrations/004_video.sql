-- Live video (issue 6): the publish tokens handed out with `video_start`, and every stream the hub relayed.

-- A `video_start` token, stored only as its HMAC digest (like API tokens), so a hub restart keeps it valid.
-- It lets one device publish until it expires or the video is stopped.
CREATE TABLE video_tokens (
    hash         text PRIMARY KEY,
    device_id    text NOT NULL,
    unit_id      text,
    incident_id  text,                           -- null: started without an incident (an SOS with no position)
    cmd_id       text NOT NULL,
    issued_at    bigint NOT NULL,                -- epoch ms
    expires_at   bigint NOT NULL,
    stopped_at   bigint                          -- `video_stop` sent: the token no longer publishes
);
CREATE INDEX video_tokens_incident_idx ON video_tokens (incident_id);

-- One row per stream (a publisher session); `ended_at` null while it is live.
CREATE TABLE video_streams (
    stream_id    text PRIMARY KEY,
    device_id    text NOT NULL,
    unit_id      text,
    incident_id  text,
    codec        text,
    started_at   bigint NOT NULL,
    ended_at     bigint
);
CREATE INDEX video_streams_device_idx ON video_streams (device_id, started_at);
CREATE INDEX video_streams_incident_idx ON video_streams (incident_id);
