package identity_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
