-- GB/T 28181 devices (body cameras that speak SIP, not MQTT) authenticate their REGISTER with HTTP digest.
-- Digest cannot be checked against the PBKDF2 hashes of device_logins, so such a device's secret is kept as
-- its digest HA1 = MD5(device_id:realm:password): the password itself is never stored, and the HA1 answers
-- only the realm it was made for (the hub's SIP domain at the time; a changed domain needs a rotation).
-- A device has either an MQTT login or a SIP login, never both (the provisioning code refuses the second).
CREATE TABLE sip_logins (
    device_id   text PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    realm       text NOT NULL CHECK (realm ~ '^[0-9A-Za-z.-]{1,64}$'),
    ha1         text NOT NULL CHECK (ha1 ~ '^[0-9a-f]{32}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz,
    revoked_at  timestamptz
);

-- A running hub puts a device provisioned elsewhere (the CLI) on its unit's live picture, as for MQTT logins.
CREATE TRIGGER sip_logins_changed AFTER INSERT OR UPDATE ON sip_logins
    FOR EACH ROW EXECUTE FUNCTION fieldhub_devices_notify();
