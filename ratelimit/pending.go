package ratelimit

import "context"

// Pending is a void or a settle waiting to be retried, as a PendingStore
// keeps it.
type Pending struct {
	// Kind is "void" (a Take whose outcome is unknown) or "settle".
	Kind string
	// Account is the charged account; ID the Take's request id (void) or
	// the reservation (settle).
	Account, ID string
	// Reservation is the reservation a voided Take made, if any.
	Reservation string
	// Credits and Settle are the voided Take's charge.
	Credits int64
	Settle  Settle
	// Capture: the settle captures (else it releases).
	Capture bool
	Reason  string
	// State is what the store needs to void the Take (opaque).
	State string
}

// PendingStore keeps the voids and settles Engine.Run retries, so that a
// restart does not forget them (internal/app keeps them in PostgreSQL when
// one is configured). Several replicas may load the same ones: voids and
// settles are idempotent.
type PendingStore interface {
	SavePending(ctx context.Context, items []Pending) error
	LoadPending(ctx context.Context) ([]Pending, error)
	DeletePending(ctx context.Context, items []Pending) error
}

// Pending kinds.
const (
	pendingVoidKind   = "void"
	pendingSettleKind = "settle"
)

// record is p as a PendingStore keeps it.
func (p *pendingVoid) record() Pending {
	if s := p.settle; s != nil {
		return Pending{Kind: pendingSettleKind, Account: s.account, ID: s.id, Capture: s.capture}
	}
	c := p.req.Charge
	return Pending{Kind: pendingVoidKind, Account: c.Account, ID: p.req.ID, Reservation: p.req.Reservation,
		Credits: c.Credits, Settle: c.Settle, Reason: p.reason, State: p.req.voidState()}
}

// fromRecord is a pending void or settle loaded from a PendingStore.
func fromRecord(r Pending) pendingVoid {
	if r.Kind == pendingSettleKind {
		return pendingVoid{settle: &pendingSettle{account: r.Account, id: r.ID, capture: r.Capture}, saved: true}
	}
	return pendingVoid{req: &Request{Charge: &Charge{Account: r.Account, Credits: r.Credits, Settle: r.Settle}, ID: r.ID, Reservation: r.Reservation,
		void: parseVoidRecord(r.State)}, reason: r.Reason, saved: true}
}
