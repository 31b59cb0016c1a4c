-- Decision log records: one row per decision, once by decision_id. The
-- columns are what billing and usage queries read; the rest of the record
-- (headers, descriptors, limits, charge) is in doc.
CREATE TABLE tollgate_decisions (
	decision_id text COLLATE "C" PRIMARY KEY,
	service     text        NOT NULL,
	request_id  text        NOT NULL DEFAULT '',
	time        timestamptz NOT NULL,
	latency_us  bigint      NOT NULL,
	consumer    text        NOT NULL DEFAULT '',
	plan        text        NOT NULL DEFAULT '',
	method      text        NOT NULL DEFAULT '',
	host        text        NOT NULL DEFAULT '',
	path        text        NOT NULL DEFAULT '',
	allow       boolean     NOT NULL,
	status      integer     NOT NULL DEFAULT 0,
	reason      text        NOT NULL DEFAULT '',
	"limit"     text        NOT NULL DEFAULT '',
	charge_id   text        NOT NULL DEFAULT '', -- the request's id in the ledger
	charged     bigint,     -- credits taken; NULL when no charge applied
	balance     bigint,     -- the balance after (or that could not pay)
	revision    text        NOT NULL DEFAULT '',
	doc         jsonb       NOT NULL
);
-- Retention deletes by time.
CREATE INDEX tollgate_decisions_time ON tollgate_decisions (time);
-- Usage: a consumer's decisions over a range.
CREATE INDEX tollgate_decisions_consumer_time ON tollgate_decisions (consumer, time);
-- Usage counts a request that both services logged once.
CREATE INDEX tollgate_decisions_request ON tollgate_decisions (consumer, request_id) WHERE request_id <> '';
-- Usage joins ledger entries to their request's decision.
CREATE INDEX tollgate_decisions_charge ON tollgate_decisions (consumer, charge_id) WHERE charge_id <> '';
