-- Device logins (issue 13): one MQTT login per device, username = client id = device_id.
-- Only a PBKDF2-SHA512 digest of the secret is kept (see hub/domain/device_login.py for the format, which both
-- Mosquitto's dynamic-security plugin and EMQX's PostgreSQL authenticator check).

CREATE TABLE device_logins (
    device_id    text PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    salt         text NOT NULL,
    secret_hash  text NOT NULL,
    iterations   integer NOT NULL CHECK (iterations > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    rotated_at   timestamptz,
    revoked_at   timestamptz
);

-- For EMQX (authentication: PostgreSQL, pbkdf2/sha512; authorization: PostgreSQL), see docs/brokers.md.
-- Only live logins appear; a revoked device has no row, so EMQX refuses it.
CREATE VIEW mqtt_user AS
    SELECT device_id AS username, secret_hash AS password_hash, salt, false AS is_superuser
    FROM device_logins WHERE revoked_at IS NULL;

CREATE VIEW mqtt_acl AS
    SELECT l.device_id AS username, 'allow'::text AS permission, 'publish'::text AS action,
           'fieldhub/v1/dev/' || l.device_id || '/' || c.channel AS topic
    FROM device_logins l CROSS JOIN (VALUES ('telemetry'), ('status'), ('event')) AS c (channel)
    WHERE l.revoked_at IS NULL
    UNION ALL
    SELECT device_id, 'allow', 'subscribe', 'fieldhub/v1/dev/' || device_id || '/cmd'
    FROM device_logins WHERE revoked_at IS NULL;

-- A running hub follows logins made elsewhere (the CLI, another hub) by LISTEN on `fieldhub_devices`: a device
-- provisioned onto a unit joins that unit's live picture at once. The payload is the device id, never a secret.
CREATE FUNCTION fieldhub_devices_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fieldhub_devices', NEW.device_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER device_logins_changed AFTER INSERT OR UPDATE ON device_logins
    FOR EACH ROW EXECUTE FUNCTION fieldhub_devices_notify();
