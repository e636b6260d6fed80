package identity_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/store"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

func newService(t *testing.T) (*identity.Service, store.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := storesqlite.Open(context.Background(), filepath.Join(dir, "nexus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return identity.New(st), st, dir
}

func TestBootstrapGeneratesOnceAndWritesAPrivateFile(t *testing.T) {
	ids, _, dir := newService(t)
	ctx := context.Background()
	file := filepath.Join(dir, "admin-token")
	tok, err := ids.Bootstrap(ctx, "", file)
	if err != nil || !strings.HasPrefix(tok, "nxt_") {
		t.Fatalf("bootstrap: %q %v", tok, err)
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	b, _ := os.ReadFile(file)
	if strings.TrimSpace(string(b)) != tok {
		t.Fatal("file does not hold the token")
	}
	p, err := ids.Authenticate(ctx, tok)
	if err != nil || !p.IsAdmin() {
		t.Fatalf("authenticate: %+v %v", p, err)
	}
	again, err := ids.Bootstrap(ctx, "", file)
	if err != nil || again != "" {
		t.Fatalf("second bootstrap generated %q (%v)", again, err)
	}
}

func TestBootstrapFromEnvironment(t *testing.T) {
	ids, _, dir := newService(t)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if gen, err := ids.Bootstrap(ctx, "nxt_from-env-0123456789", filepath.Join(dir, "admin-token")); err != nil || gen != "" {
			t.Fatalf("bootstrap %d: %q %v", i, gen, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "admin-token")); !os.IsNotExist(err) {
		t.Fatal("a token file was written although the token came from the environment")
	}
	if p, err := ids.Authenticate(ctx, "nxt_from-env-0123456789"); err != nil || !p.IsAdmin() {
		t.Fatalf("authenticate: %+v %v", p, err)
	}
	tokens, _ := ids.List(ctx)
	if len(tokens) != 1 {
		t.Fatalf("%d tokens, want 1", len(tokens))
	}
}

func TestAuthenticateRefusesUnknownRevokedAndMalformed(t *testing.T) {
	ids, _, _ := newService(t)
	ctx := context.Background()
	plain, tok, err := ids.Create(ctx, "reader", store.RoleUser, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ids.Authenticate(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if err := ids.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{plain, "", "nxt_unknown", strings.Repeat("x", 1000), plain + "x"} {
		if _, err := ids.Authenticate(ctx, bad); !errs.Is(err, errs.Unauthenticated) {
			t.Errorf("token %.20q: %v", bad, err)
		}
	}
	if err := ids.Revoke(ctx, "tok_missing"); err == nil {
		t.Error("revoking an unknown token succeeded")
	}
}

func TestTokensAreStoredOnlyAsHashes(t *testing.T) {
	ids, st, _ := newService(t)
	plain, _, err := ids.Create(context.Background(), "x", store.RoleAdmin, "")
	if err != nil {
		t.Fatal(err)
	}
	var all []store.Token
	_ = st.Read(context.Background(), func(tx store.Tx) error { all, err = tx.Tokens(); return err })
	for _, tk := range all {
		if strings.Contains(string(tk.Hash), plain) || string(tk.Hash) == plain || len(tk.Hash) != 32 {
			t.Fatalf("token stored in a recoverable form: %x", tk.Hash)
		}
	}
}

func TestBearerToken(t *testing.T) {
	cases := map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "Bearer": "", "": ""}
	for header, want := range cases {
		got, ok := identity.BearerToken(header)
		if got != want || ok != (want != "") {
			t.Errorf("%q: %q %v", header, got, ok)
		}
	}
}

func TestBootstrapTokenRotationAndLength(t *testing.T) {
	ids, _, dir := newService(t)
	ctx := context.Background()
	file := filepath.Join(dir, "admin-token")
	if _, err := ids.Bootstrap(ctx, "short", file); err == nil {
		t.Fatal("a short NEXUS_ADMIN_TOKEN was accepted")
	}
	if _, err := ids.Bootstrap(ctx, "nxt_first-admin-token-01", file); err != nil {
		t.Fatal(err)
	}
	if _, err := ids.Bootstrap(ctx, "nxt_second-admin-token-02", file); err != nil {
		t.Fatal(err)
	}
	if _, err := ids.Authenticate(ctx, "nxt_first-admin-token-01"); !errs.Is(err, errs.Unauthenticated) {
		t.Fatalf("the replaced bootstrap token still works: %v", err)
	}
	if _, err := ids.Authenticate(ctx, "nxt_second-admin-token-02"); err != nil {
		t.Fatal(err)
	}
}

func TestTokenExpiry(t *testing.T) {
	ids, st, _ := newService(t)
	ctx := context.Background()
	plain, tok, err := ids.CreateWithTTL(ctx, "ci", store.RoleUser, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.ExpiresAt.Sub(tok.CreatedAt); got != time.Hour {
		t.Fatalf("ExpiresAt is %s after CreatedAt, want 1h", got)
	}
	if _, err := ids.Authenticate(ctx, plain); err != nil {
		t.Fatalf("a token before its expiry: %v", err)
	}
	// A token whose expiry has passed, written as the store holds it.
	const expired = "nxt_expired-token-0123456789abcdef"
	past := time.Now().UTC().Add(-time.Second)
	if err := st.Write(ctx, func(tx store.Tx) error {
		return tx.PutToken(store.Token{ID: "tok_expired", Name: "old", Role: store.RoleAdmin, Hash: identity.Hash(expired),
			CreatedAt: past.Add(-time.Hour), ExpiresAt: past})
	}); err != nil {
		t.Fatal(err)
	}
	_, err = ids.Authenticate(ctx, expired)
	if !errs.Is(err, errs.Unauthenticated) || !strings.Contains(errs.MessageOf(err), "expired at "+past.Format(time.RFC3339)) {
		t.Fatalf("an expired token: %v", err)
	}
	ended, err := ids.RevokedAmong(ctx, []string{tok.ID, "tok_expired"})
	if err != nil || len(ended) != 1 || ended[0] != "tok_expired" {
		t.Fatalf("RevokedAmong = %v (%v), want the expired token only", ended, err)
	}
	// An expired admin token does not count as the admin token that makes Bootstrap skip.
	if _, err := ids.Bootstrap(ctx, expired, ""); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("NEXUS_ADMIN_TOKEN naming an expired token: %v", err)
	}

	for _, ttl := range []time.Duration{-time.Second, identity.MaxTTL + time.Second} {
		if _, _, err := ids.CreateWithTTL(ctx, "bad", store.RoleUser, "", ttl); !errs.Is(err, errs.ValidationError) {
			t.Errorf("ttl %s: %v, want VALIDATION_ERROR", ttl, err)
		}
	}
	_, never, err := ids.Create(ctx, "forever", store.RoleUser, "")
	if err != nil || !never.ExpiresAt.IsZero() {
		t.Fatalf("Create: %+v %v, want no expiry", never, err)
	}
}

func TestRevokeNamed(t *testing.T) {
	ids, st, _ := newService(t)
	ctx := context.Background()
	if err := st.Write(ctx, func(tx store.Tx) error { return tx.PutPlugin(store.Plugin{ID: "p1"}) }); err != nil {
		t.Fatal(err)
	}
	launch, _, _ := ids.Create(ctx, "runtime:p1", store.RolePlugin, "p1")
	_, revokedBefore, _ := ids.Create(ctx, "runtime:p1", store.RolePlugin, "p1")
	if err := ids.Revoke(ctx, revokedBefore.ID); err != nil {
		t.Fatal(err)
	}
	other, _, _ := ids.Create(ctx, "p1 by hand", store.RolePlugin, "p1")
	user, _, _ := ids.Create(ctx, "runtime:looks-alike", store.RoleUser, "")
	var announced []string
	ids.OnRevoke(func(id string) { announced = append(announced, id) })
	revoked, err := ids.RevokeNamed(ctx, store.RolePlugin, "runtime:")
	if err != nil || len(revoked) != 1 || fmt.Sprint(announced) != fmt.Sprint(revoked) {
		t.Fatalf("RevokeNamed = %v (%v), announced %v; want one token, announced", revoked, err, announced)
	}
	if _, err := ids.Authenticate(ctx, launch); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("the launch token is still valid: %v", err)
	}
	for _, keep := range []string{other, user} {
		if _, err := ids.Authenticate(ctx, keep); err != nil {
			t.Errorf("a token RevokeNamed must keep: %v", err)
		}
	}
	if _, err := ids.RevokeNamed(ctx, store.RolePlugin, ""); err == nil {
		t.Error("RevokeNamed with an empty prefix succeeded")
	}
}

// A token read from the store is trusted for the cache's TTL: a revocation through the
// Service is seen at once, one made by another process (straight in the store, as the CLI
// does beside a running server) once the TTL has passed.
func TestAuthenticateCache(t *testing.T) {
	ctx := context.Background()
	for _, ttl := range []time.Duration{time.Hour, 0} {
		svc, st, _ := newService(t)
		identity.SetCacheTTL(svc, ttl)
		plain, tok, err := svc.Create(ctx, "ci", store.RoleUser, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Authenticate(ctx, plain); err != nil {
			t.Fatal(err)
		}
		if err := st.Write(ctx, func(tx store.Tx) error { return tx.RevokeToken(tok.ID, time.Now()) }); err != nil {
			t.Fatal(err)
		}
		_, err = svc.Authenticate(ctx, plain)
		if ttl > 0 && err != nil {
			t.Fatalf("ttl %s: a token revoked elsewhere was refused within the TTL (the cache is not used): %v", ttl, err)
		}
		if ttl == 0 && !errs.Is(err, errs.Unauthenticated) {
			t.Fatalf("ttl 0: a revoked token was accepted: %v", err)
		}
		plain2, tok2, err := svc.Create(ctx, "ci-2", store.RoleUser, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Authenticate(ctx, plain2); err != nil {
			t.Fatal(err)
		}
		if err := svc.Revoke(ctx, tok2.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Authenticate(ctx, plain2); !errs.Is(err, errs.Unauthenticated) {
			t.Fatalf("ttl %s: a token revoked through the service was accepted: %v", ttl, err)
		}
	}
}
