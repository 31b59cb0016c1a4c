package ratelimit

import "testing"

// TestSlot checks the slot function against values Redis Cluster computes
// (CLUSTER KEYSLOT), and that every slot's ledger key lands in its slot.
func TestSlot(t *testing.T) {
	for key, want := range map[string]int{
		"foo":                     12182,
		"bar":                     5061,
		"{user1000}.following":    3443,
		"{user1000}.followers":    3443,
		"foo{}{bar}":              8363,
		"foo{{bar}}zap":           4015,
		"foo{bar}{zap}":           5061,
		"tollgate:{acme}:credits": slot("acme"),
		"":                        0,
		"123456789":               0x31C3 % slots,
	} {
		if got := slot(key); got != want {
			t.Errorf("slot(%q) = %d, want %d", key, got, want)
		}
	}
	for s := range slots {
		if got := slot(ledgerKey(s)); got != s {
			t.Fatalf("ledgerKey(%d) = %q is in slot %d", s, ledgerKey(s), got)
		}
	}
}
