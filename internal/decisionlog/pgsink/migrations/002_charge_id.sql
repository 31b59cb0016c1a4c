-- Ledger entries find their decision by charge id alone: refunds and
-- releases may not name the consumer.
CREATE INDEX tollgate_decisions_charge_id ON tollgate_decisions (charge_id) WHERE charge_id <> '';
