-- Voids and settles that failed and are being retried, so a restart of
-- Tollgate does not forget them (ratelimit.PendingStore).
CREATE TABLE tollgate_pending (
	kind        text        NOT NULL,
	account     text        NOT NULL,
	id          text        NOT NULL,
	reservation text        NOT NULL DEFAULT '',
	credits     bigint      NOT NULL DEFAULT 0,
	settle      text        NOT NULL DEFAULT '',
	capture     boolean     NOT NULL DEFAULT false,
	reason      text        NOT NULL DEFAULT '',
	created_at  timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (kind, account, id)
);
