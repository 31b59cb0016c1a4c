-- The key directory: consumers, their keys (hashed), an append-only log
-- of every change, and the idempotency keys of the mutations.
CREATE TABLE tollgate_consumers (
	id         text COLLATE "C" PRIMARY KEY,
	plan       text        NOT NULL DEFAULT '',
	status     text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
	metadata   jsonb       NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tollgate_keys (
	id           text COLLATE "C" PRIMARY KEY,
	hash         bytea       NOT NULL UNIQUE CHECK (length(hash) = 32),
	prefix       text        NOT NULL,
	consumer     text COLLATE "C" NOT NULL REFERENCES tollgate_consumers (id),
	name         text        NOT NULL DEFAULT '',
	rotated_from text        NOT NULL DEFAULT '',
	created_at   timestamptz NOT NULL DEFAULT now(),
	expires_at   timestamptz,
	revoked_at   timestamptz,
	last_used_at timestamptz
);
-- A consumer's keys, oldest first.
CREATE INDEX tollgate_keys_consumer ON tollgate_keys (consumer, created_at, id);

-- One row per change, in commit order: every writer holds the directory's
-- advisory lock from before it takes its seq until it commits, so a reader
-- that has seen seq n has seen every change before it.
CREATE TABLE tollgate_directory_changes (
	seq    bigserial   PRIMARY KEY,
	kind   text        NOT NULL CHECK (kind IN ('consumer', 'key')),
	id     text        NOT NULL,
	op     text        NOT NULL,
	actor  text        NOT NULL DEFAULT '',
	at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tollgate_directory_idempotency (
	key         text        PRIMARY KEY,
	operation   text        NOT NULL,
	fingerprint bytea       NOT NULL,
	result_id   text        NOT NULL,
	created_at  timestamptz NOT NULL DEFAULT now()
);
-- Purged by age (PGStore.PurgeIdempotency).
CREATE INDEX tollgate_directory_idempotency_created ON tollgate_directory_idempotency (created_at);
