-- Issue 13: a `video_start` token opens exactly one WHIP session. Its use is recorded here, not only in memory,
-- so a hub restart cannot re-open a token that was used before it.
--   used_at     set (atomically, `WHERE used_at IS NULL`) when a publish with the token begins; cleared again
--               only if that publish failed before a session existed (a bad offer), so the device may retry.
--   session_id  the WHIP session (= stream id) the token created; only that session's resource answers it.
-- A token with used_at set and no session_id is one whose publish was under way when the hub stopped: it
-- stays used, which is the safe side.
ALTER TABLE video_tokens ADD COLUMN used_at bigint, ADD COLUMN session_id text;
CREATE UNIQUE INDEX video_tokens_session_idx ON video_tokens (session_id) WHERE session_id IS NOT NULL;
