package metrics

import (
	"math"
	"math/bits"
)

// Distinct callers (unique_users) are counted in a fixed 1.5 KiB per plugin: the first
// exactDistinct distinct callers are kept exactly, as 64-bit hashes, and every caller also
// updates a HyperLogLog sketch of 2^10 one-byte registers. Up to exactDistinct callers the
// count is exact (barring a 64-bit hash collision); beyond, it is the sketch's estimate, whose
// standard error is 1.04/√1024 ≈ 3.3 % (linear counting keeps small counts closer).
const (
	exactDistinct = 64
	hllPrecision  = 10
	hllRegisters  = 1 << hllPrecision
)

// distinct is a bounded distinct-count of caller identities. It is guarded by the owning
// plugin's lock.
type distinct struct {
	exact    [exactDistinct]uint64
	nExact   int
	overflow bool // more than exactDistinct distinct hashes were seen
	regs     [hllRegisters]uint8
}

// add counts key.
func (d *distinct) add(key string) {
	h := hash64(key)
	// The top bits choose the register; the rank is the position of the first set bit of the
	// rest. The guard bit caps the rank at 64 - hllPrecision + 1.
	reg := h >> (64 - hllPrecision)
	rank := uint8(bits.LeadingZeros64(h<<hllPrecision|1<<(hllPrecision-1)) + 1)
	d.regs[reg] = max(d.regs[reg], rank)

	if d.overflow {
		return
	}
	for _, e := range d.exact[:d.nExact] {
		if e == h {
			return
		}
	}
	if d.nExact == exactDistinct {
		d.overflow = true
		return
	}
	d.exact[d.nExact] = h
	d.nExact++
}

// count returns the number of distinct keys added, exactly up to exactDistinct and estimated
// beyond.
func (d *distinct) count() uint64 {
	if !d.overflow {
		return uint64(d.nExact)
	}
	const m = float64(hllRegisters)
	var sum float64
	zeros := 0
	for _, r := range d.regs {
		sum += math.Ldexp(1, -int(r))
		if r == 0 {
			zeros++
		}
	}
	est := 0.7213 / (1 + 1.079/m) * m * m / sum
	if est <= 2.5*m && zeros > 0 {
		est = m * math.Log(m/float64(zeros)) // linear counting for small cardinalities
	}
	// More than exactDistinct distinct keys were seen for certain.
	return max(uint64(math.Round(est)), exactDistinct+1)
}

// hash64 is FNV-1a followed by the MurmurHash3 finaliser, which spreads FNV's weak high bits
// across the word. It is deterministic, so counts do not depend on the process.
func hash64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
