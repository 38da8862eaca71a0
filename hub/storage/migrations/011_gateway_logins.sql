-- Gateway devices (issue 17): JT/T 808 terminals, OwnTracks and OsmAnd/Traccar Client phones. Each is known by the
-- identifier its protocol presents (`ident`): a JT/T 808 terminal by its phone number (digits, no leading zeros, as
-- the frame header carries it), a phone app by the device id itself (its user / device identifier).
-- A device has one login kind, MQTT, SIP or gateway: the provisioning code refuses a second live one.
-- Secrets as in device_logins (salt + PBKDF2-SHA512 hex, never the secret). A JT/T 808 terminal has none until its
-- first registration while the window is open: the authentication code it is given then is stored and the window
-- closed, so knowing a phone number is not enough to take the code; a rotation reopens it.
CREATE TABLE gateway_logins (
    device_id          text PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    protocol           text NOT NULL CHECK (protocol IN ('jt808', 'owntracks', 'osmand')),
    ident              text NOT NULL,
    salt               text,
    secret_hash        text CHECK (secret_hash ~ '^[0-9a-f]+$'),
    iterations         integer NOT NULL DEFAULT 1000 CHECK (iterations > 0),
    terminal_id        text CHECK (terminal_id ~ '^[0-9A-Za-z-]{1,30}$'),
    registration_open  boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    rotated_at         timestamptz,
    revoked_at         timestamptz,
    CHECK ((salt IS NULL) = (secret_hash IS NULL)),
    CHECK (CASE WHEN protocol = 'jt808' THEN ident ~ '^([1-9][0-9]{0,19}|0)$'
                ELSE ident = device_id AND secret_hash IS NOT NULL AND terminal_id IS NULL
                     AND NOT registration_open END)
);

-- One live login per identifier: two terminals with the same phone number could not be told apart.
CREATE UNIQUE INDEX gateway_logins_live_ident ON gateway_logins (protocol, ident) WHERE revoked_at IS NULL;

-- A running hub follows logins made elsewhere (the CLI), as for MQTT and SIP logins.
CREATE TRIGGER gateway_logins_changed AFTER INSERT OR UPDATE ON gateway_logins
    FOR EACH ROW EXECUTE FUNCTION fieldhub_devices_notify();

-- OwnTracks phones connect to the broker too (user = client id = device id): EMQX reads them from the same views,
-- with the OwnTracks topics of their own device id only (the app's own sub-topics and its cmd topic).
CREATE OR REPLACE VIEW mqtt_user AS
    SELECT device_id AS username, secret_hash AS password_hash, salt, false AS is_superuser
    FROM device_logins WHERE revoked_at IS NULL
    UNION ALL
    SELECT device_id, secret_hash, salt, false
    FROM gateway_logins WHERE protocol = 'owntracks' AND revoked_at IS NULL;

CREATE OR REPLACE VIEW mqtt_acl AS
    SELECT l.device_id AS username, 'allow'::text AS permission, 'publish'::text AS action,
           'fieldhub/v1/dev/' || l.device_id || '/' || c.channel AS topic
    FROM device_logins l CROSS JOIN (VALUES ('telemetry'), ('status'), ('event')) AS c (channel)
    WHERE l.revoked_at IS NULL
    UNION ALL
    SELECT device_id, 'allow', 'subscribe', 'fieldhub/v1/dev/' || device_id || '/cmd'
    FROM device_logins WHERE revoked_at IS NULL
    UNION ALL
    SELECT g.device_id, 'allow', 'publish', 'owntracks/' || g.device_id || t.suffix
    FROM gateway_logins g CROSS JOIN (VALUES ('/+'), ('/+/+')) AS t (suffix)
    WHERE g.protocol = 'owntracks' AND g.revoked_at IS NULL
    UNION ALL
    SELECT device_id, 'allow', 'subscribe', 'owntracks/' || device_id || '/+/cmd'
    FROM gateway_logins WHERE protocol = 'owntracks' AND revoked_at IS NULL;
