-- What the store needs to void a pending Take: the window of its time it
-- ran in if at all, or what it took (ratelimit.Pending.State).
ALTER TABLE tollgate_pending ADD COLUMN state text NOT NULL DEFAULT '';
