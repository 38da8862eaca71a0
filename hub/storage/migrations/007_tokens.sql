-- API tokens (issue 13 point 4): an expiry, and a notification on every change.
-- A running hub answers every bearer check from its in-memory registry (hub/tokens.py); it follows the table by
-- LISTEN on `fieldhub_tokens`, so a token revoked by the CLI or by another hub is refused within a second, with
-- no cache window. The trigger notifies for every writer (CLI, REST, psql by hand): nobody can forget to.

-- NULL: never expires (the bootstrap/demo token, tokens created before this migration).
ALTER TABLE tokens ADD COLUMN expires_at timestamptz;
ALTER TABLE tokens ADD CONSTRAINT tokens_expiry_after_creation CHECK (expires_at IS NULL OR expires_at > created_at);

-- The payload names the change, never the digest: `upsert:<token_id>`, `delete:<token_id>` or `reload`.
-- NOTIFY is delivered at commit, so a listener that reads the row then sees the committed state.
CREATE FUNCTION fieldhub_tokens_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('fieldhub_tokens', 'reload');
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('fieldhub_tokens', 'delete:' || OLD.token_id);
    ELSE
        PERFORM pg_notify('fieldhub_tokens', 'upsert:' || NEW.token_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tokens_changed AFTER INSERT OR UPDATE OR DELETE ON tokens
    FOR EACH ROW EXECUTE FUNCTION fieldhub_tokens_notify();
CREATE TRIGGER tokens_truncated AFTER TRUNCATE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION fieldhub_tokens_notify();
