package identity

import "time"

// SetCacheTTL sets how long s trusts a token it read from the store (tests).
func SetCacheTTL(s *Service, d time.Duration) { s.cacheTTL = d }
