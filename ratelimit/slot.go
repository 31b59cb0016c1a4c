package ratelimit

import (
	"strconv"
	"strings"
	"sync"
)

// slots is the number of Redis Cluster hash slots.
const slots = 16384

// slot is the Redis Cluster hash slot of key: CRC16 (XMODEM) of its hash
// tag (the part between the first "{" and the next "}", when not empty),
// modulo 16384.
func slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key)) % slots
}

func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slotTags holds, for each slot, a short hash tag that hashes to it, so
// that a key can be placed in the slot of another (a ledger stream in the
// slot of the balances it records).
var slotTags = sync.OnceValue(func() []string {
	tags := make([]string, slots)
	for found, n := 0, 0; found < slots; n++ {
		t := "l" + strconv.Itoa(n)
		if s := int(crc16(t)) % slots; tags[s] == "" {
			tags[s] = t
			found++
		}
	}
	return tags
})

// ledgerKey is the ledger stream of a slot: in a Cluster, each slot has its
// own, so a script records a balance change in the slot of the balance.
func ledgerKey(slot int) string { return "tollgate:{" + slotTags()[slot] + "}:ledger" }
