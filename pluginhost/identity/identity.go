// Package identity issues and checks access tokens. Tokens are opaque random strings;
// only their SHA-256 hashes are stored, and hashes are compared in constant time.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/store"
)

// tokenPrefix marks Nexus tokens, so that secret scanners and people recognise them.
const tokenPrefix = "nxt_"

// bootstrapName names the admin token created from NEXUS_ADMIN_TOKEN or on first start.
const bootstrapName = "bootstrap-admin"

// Principal is the authenticated caller of a request.
type Principal struct {
	TokenID string
	Name    string
	Role    store.Role
	// PluginID is set for plugin tokens: the only plugin the caller may act as.
	PluginID string
}

// IsAdmin reports whether the principal has the admin role.
func (p Principal) IsAdmin() bool { return p.Role == store.RoleAdmin }

// Service issues, lists, revokes and checks tokens.
type Service struct {
	store store.Store
	now   func() time.Time

	mu       sync.Mutex // guards onRevoke
	onRevoke []func(tokenID string)

	// cache holds the tokens found in the last cacheTTL, by hash: a call checks its token
	// against memory instead of the store (a store read was most of the cost of a small
	// authenticated call). Revocations through this Service drop their entries at once; a
	// token revoked by another process (the CLI beside a running server) is refused within
	// cacheTTL. Expiry is checked on every call, cached or not.
	cmu      sync.Mutex
	cache    map[string]cachedToken
	cacheTTL time.Duration
}

// cachedToken is a token as the store had it at a time.
type cachedToken struct {
	tok store.Token
	at  time.Time
}

// Cache bounds: how long a token found in the store is trusted without reading it again,
// and how many are kept (the cache is emptied when it is full).
const (
	defaultCacheTTL = time.Second
	maxCachedTokens = 4096
)

// New returns a Service over st.
func New(st store.Store) *Service {
	return &Service{store: st, now: func() time.Time { return time.Now().UTC() },
		cache: map[string]cachedToken{}, cacheTTL: defaultCacheTTL}
}

// Hash returns the stored form of a token.
func Hash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// Authenticate returns the principal a bearer token belongs to. Unknown, malformed and
// revoked tokens all fail with UNAUTHENTICATED and the same message; an expired token fails
// with UNAUTHENTICATED and a message saying when it expired (only its holder can learn it).
func (s *Service) Authenticate(ctx context.Context, token string) (Principal, error) {
	denied := errs.New(errs.Unauthenticated, "invalid or revoked token")
	if token == "" || len(token) > 512 {
		return Principal{}, denied
	}
	hash := Hash(token)
	tok, err := s.lookup(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, denied
	}
	if err != nil {
		return Principal{}, errs.Wrap(errs.Internal, err, "could not check the token")
	}
	if subtle.ConstantTimeCompare(tok.Hash, hash) != 1 || !tok.RevokedAt.IsZero() {
		return Principal{}, denied
	}
	if tok.Expired(s.now()) {
		return Principal{}, errs.New(errs.Unauthenticated, "the token expired at %s", tok.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return Principal{TokenID: tok.ID, Name: tok.Name, Role: tok.Role, PluginID: tok.PluginID}, nil
}

// lookup returns the stored token with hash, from the cache when it was read within
// cacheTTL.
func (s *Service) lookup(ctx context.Context, hash []byte) (store.Token, error) {
	now := s.now()
	key := string(hash)
	s.cmu.Lock()
	c, ok := s.cache[key]
	s.cmu.Unlock()
	if ok && now.Sub(c.at) < s.cacheTTL && !now.Before(c.at) {
		return c.tok, nil
	}
	var tok store.Token
	err := s.store.Read(ctx, func(tx store.Tx) error {
		var err error
		tok, err = tx.TokenByHash(hash)
		return err
	})
	if err != nil {
		return tok, err
	}
	s.cmu.Lock()
	if len(s.cache) >= maxCachedTokens {
		clear(s.cache)
	}
	s.cache[key] = cachedToken{tok: tok, at: now}
	s.cmu.Unlock()
	return tok, nil
}

// forget drops the cached tokens with the ids.
func (s *Service) forget(ids []string) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	for k, c := range s.cache {
		if slices.Contains(ids, c.tok.ID) {
			delete(s.cache, k)
		}
	}
}

// MaxTTL is the longest lifetime a token can be given; a token meant to last longer is
// created without one (it never expires).
const MaxTTL = 100 * 365 * 24 * time.Hour

// Create issues a token that never expires and returns it in clear (the only time it is
// available) with its record.
func (s *Service) Create(ctx context.Context, name string, role store.Role, pluginID string) (string, store.Token, error) {
	return s.CreateWithTTL(ctx, name, role, pluginID, 0)
}

// CreateWithTTL issues a token that expires ttl from now (never when ttl is 0) and returns
// it in clear (the only time it is available) with its record. A negative ttl, or one over
// MaxTTL, is refused with VALIDATION_ERROR.
func (s *Service) CreateWithTTL(ctx context.Context, name string, role store.Role, pluginID string, ttl time.Duration) (string, store.Token, error) {
	if err := checkRole(role, pluginID); err != nil {
		return "", store.Token{}, err
	}
	if ttl < 0 || ttl > MaxTTL {
		return "", store.Token{}, errs.New(errs.ValidationError, "ttl must be positive and at most %s, not %s", MaxTTL, ttl)
	}
	if name == "" {
		name = string(role)
		if pluginID != "" {
			name = "plugin:" + pluginID
		}
	}
	plain, err := NewSecret()
	if err != nil {
		return "", store.Token{}, err
	}
	now := s.now()
	tok := store.Token{ID: newID(), Name: name, Role: role, PluginID: pluginID, Hash: Hash(plain), CreatedAt: now}
	if ttl > 0 {
		tok.ExpiresAt = now.Add(ttl)
	}
	err = s.store.Write(ctx, func(tx store.Tx) error {
		if pluginID != "" {
			if _, err := tx.Plugin(pluginID); errors.Is(err, store.ErrNotFound) {
				return errs.New(errs.PluginNotFound, "plugin %q is not installed", pluginID)
			} else if err != nil {
				return err
			}
		}
		return tx.PutToken(tok)
	})
	if err != nil {
		return "", store.Token{}, err
	}
	return plain, tok, nil
}

// List returns every token record, newest first.
func (s *Service) List(ctx context.Context) ([]store.Token, error) {
	var out []store.Token
	err := s.store.Read(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Tokens()
		return err
	})
	return out, err
}

// Revoke revokes the token with the id.
func (s *Service) Revoke(ctx context.Context, id string) error {
	err := s.store.Write(ctx, func(tx store.Tx) error { return tx.RevokeToken(id, s.now()) })
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no token with id %q", id)
	}
	if err == nil {
		s.announce([]string{id})
	}
	return err
}

// RevokeNamed revokes every token of the role whose name starts with prefix (which must
// not be empty) and that is not revoked yet, in one transaction, and returns their ids.
func (s *Service) RevokeNamed(ctx context.Context, role store.Role, prefix string) ([]string, error) {
	if prefix == "" {
		return nil, errors.New("identity: RevokeNamed needs a name prefix")
	}
	return s.RevokeMatching(ctx, role, func(name string) bool { return strings.HasPrefix(name, prefix) })
}

// RevokeMatching revokes every token of the role whose name match accepts and that is not
// revoked yet, in one transaction, and returns their ids.
func (s *Service) RevokeMatching(ctx context.Context, role store.Role, match func(name string) bool) ([]string, error) {
	var ids []string
	err := s.store.Write(ctx, func(tx store.Tx) error {
		ids = ids[:0]
		all, err := tx.Tokens()
		if err != nil {
			return err
		}
		now := s.now()
		for _, t := range all {
			if t.Role == role && t.RevokedAt.IsZero() && match(t.Name) {
				if err := tx.RevokeToken(t.ID, now); err != nil {
					return err
				}
				ids = append(ids, t.ID)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.announce(ids)
	return ids, nil
}

// announce drops the revoked tokens from the cache and calls the OnRevoke hooks with each
// revoked token id.
func (s *Service) announce(ids []string) {
	s.forget(ids)
	s.mu.Lock()
	hooks := slices.Clone(s.onRevoke)
	s.mu.Unlock()
	for _, id := range ids {
		for _, fn := range hooks {
			fn(id)
		}
	}
}

// OnRevoke registers fn to be called with the id of every token this service revokes, once
// the revocation is stored. fn must not block. Revocations made by another process on the
// same store (`nexus token revoke`) are not announced: [Service.RevokedAmong] finds them.
func (s *Service) OnRevoke(fn func(tokenID string)) {
	s.mu.Lock()
	s.onRevoke = append(s.onRevoke, fn)
	s.mu.Unlock()
}

// RevokedElsewhere drops tokens revoked by another server sharing the store from the cache
// (so they stop authenticating at once, not when their cache entry expires) and calls the
// OnRevoke hooks with each.
func (s *Service) RevokedElsewhere(ids []string) { s.announce(ids) }

// RevokedAmong returns which of the token ids are revoked, expired or no longer exist.
func (s *Service) RevokedAmong(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	valid := map[string]bool{}
	now := s.now()
	err := s.store.Read(ctx, func(tx store.Tx) error {
		toks, err := tx.Tokens()
		for _, t := range toks {
			valid[t.ID] = t.RevokedAt.IsZero() && !t.Expired(now)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		if !valid[id] {
			out = append(out, id)
		}
	}
	// What this finds revoked (by another process) is refused from now on, not only once
	// the cache forgets it.
	s.forget(out)
	return out, nil
}

// MinAdminTokenLength is the shortest NEXUS_ADMIN_TOKEN accepted.
const MinAdminTokenLength = 16

// Bootstrap makes sure an admin token exists. When envToken is set it becomes the
// bootstrap admin token (created on first sight) and any earlier bootstrap token is revoked.
// Otherwise, when no admin token exists yet, one is generated, written to tokenFile with mode
// 0600 (before it is recorded, so a token is never valid without its file), and returned so
// the caller can print it once; "" means nothing was generated.
func (s *Service) Bootstrap(ctx context.Context, envToken, tokenFile string) (generated string, err error) {
	if envToken != "" {
		if len(envToken) < MinAdminTokenLength {
			return "", fmt.Errorf("NEXUS_ADMIN_TOKEN must be at least %d characters", MinAdminTokenLength)
		}
		hash := Hash(envToken)
		return "", s.store.Write(ctx, func(tx store.Tx) error {
			tok, err := tx.TokenByHash(hash)
			switch {
			case err == nil && tok.Role == store.RoleAdmin && tok.RevokedAt.IsZero() && !tok.Expired(s.now()):
			case err == nil:
				return fmt.Errorf("NEXUS_ADMIN_TOKEN matches a token that is revoked, expired or not an admin token")
			case !errors.Is(err, store.ErrNotFound):
				return err
			default:
				tok = store.Token{ID: newID(), Name: bootstrapName, Role: store.RoleAdmin, Hash: hash, CreatedAt: s.now()}
				if err := tx.PutToken(tok); err != nil {
					return err
				}
			}
			// Only the current NEXUS_ADMIN_TOKEN stays valid as the bootstrap token.
			all, err := tx.Tokens()
			if err != nil {
				return err
			}
			for _, t := range all {
				if t.Name == bootstrapName && t.ID != tok.ID && t.RevokedAt.IsZero() {
					if err := tx.RevokeToken(t.ID, s.now()); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	tokens, err := s.List(ctx)
	if err != nil {
		return "", err
	}
	for _, t := range tokens {
		if t.Role == store.RoleAdmin && t.RevokedAt.IsZero() && !t.Expired(s.now()) {
			return "", nil
		}
	}
	plain, err := NewSecret()
	if err != nil {
		return "", err
	}
	if err := writeSecretFile(tokenFile, plain+"\n"); err != nil {
		return "", err
	}
	tok := store.Token{ID: newID(), Name: bootstrapName, Role: store.RoleAdmin, Hash: Hash(plain), CreatedAt: s.now()}
	if err := s.store.Write(ctx, func(tx store.Tx) error { return tx.PutToken(tok) }); err != nil {
		return "", err
	}
	return plain, nil
}

// NewSecret returns a new random token string.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random: %w", err)
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// BearerToken extracts the token from an Authorization header value.
func BearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func checkRole(role store.Role, pluginID string) error {
	switch role {
	case store.RoleAdmin, store.RoleUser:
		if pluginID != "" {
			return errs.New(errs.ValidationError, "only plugin tokens are bound to a plugin")
		}
	case store.RolePlugin:
		if pluginID == "" {
			return errs.New(errs.ValidationError, "a plugin token needs the plugin id it is bound to")
		}
	default:
		return errs.New(errs.ValidationError, "role must be admin, user or plugin, not %q", role)
	}
	return nil
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error on supported platforms
	return "tok_" + hex.EncodeToString(b)
}

func writeSecretFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".token-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
