-- The ledger: one row per balance change, exactly once by id.
CREATE TABLE tollgate_ledger (
	id              text COLLATE "C" PRIMARY KEY,
	account         text        NOT NULL,
	consumer        text        NOT NULL DEFAULT '',
	kind            text        NOT NULL,
	amount          bigint      NOT NULL,
	balance_after   bigint      NOT NULL,
	request_id      text        NOT NULL DEFAULT '',
	reason          text        NOT NULL DEFAULT '',
	policy_revision text        NOT NULL DEFAULT '',
	time            timestamptz NOT NULL,
	recorded_at     timestamptz NOT NULL DEFAULT now()
);
-- An account's entries in (time, id) order: pages and sums.
CREATE INDEX tollgate_ledger_account_time ON tollgate_ledger (account, time, id);
-- Every entry in time order: exports, retention.
CREATE INDEX tollgate_ledger_time ON tollgate_ledger (time);

-- How far each stream has been shipped, moved in the same statement as
-- the entries it covers, and only forward.
CREATE TABLE tollgate_ledger_checkpoints (
	stream     text        PRIMARY KEY,
	last_id    text        NOT NULL,
	last_ms    bigint      NOT NULL,
	last_seq   bigint      NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);
