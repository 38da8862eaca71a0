-- The audit log (issue 13 point 7): who did what to what, and when. Every credential, token and role change,
-- every dispatch, cancel and close, every drone command. Append-only, and the database itself enforces it:
-- UPDATE, DELETE and TRUNCATE are refused by triggers, so a bug or a compromised route of the hub cannot
-- rewrite history through the hub's own login. (An owner or superuser can still drop the triggers; that is
-- an act on the schema, outside what the hub ever does, and shows in the server log.)

CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,                        -- a token's name, a device id, or "hub" for automatic acts
    role    text,                                 -- the token's role (admin, dispatcher, ...); NULL for the hub
    action  text NOT NULL,                        -- dotted: token.create, incident.dispatch, drone.goto, ...
    target  text NOT NULL,                        -- what was acted on: an incident, unit, drone, token or device id
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, id);

CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Statement-level, so even a DELETE or UPDATE that matches no row is refused: nothing to probe with.
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();
