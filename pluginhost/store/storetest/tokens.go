package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// sampleTokens returns tokens created one second apart, oldest first.
func sampleTokens(at time.Time) []store.Token {
	return []store.Token{
		{ID: "tok-admin", Name: "root", Role: store.RoleAdmin, Hash: []byte("hash-admin"), CreatedAt: at},
		{ID: "tok-user", Name: "alice", Role: store.RoleUser, Hash: []byte("hash-user"), CreatedAt: at.Add(time.Second), ExpiresAt: at.Add(24*time.Hour + 123456789)},
		{ID: "tok-p1", Name: "p1", Role: store.RolePlugin, PluginID: "p1", Hash: []byte{0, 1, 2, 0xff}, CreatedAt: at.Add(2 * time.Second)},
		{ID: "tok-p2", Name: "p2", Role: store.RolePlugin, PluginID: "p2", Hash: []byte("hash-p2"), CreatedAt: at.Add(3 * time.Second), ExpiresAt: at.Add(-time.Hour)},
		{ID: "tok-p1b", Name: "p1 second", Role: store.RolePlugin, PluginID: "p1", Hash: []byte("hash-p1b"), CreatedAt: at.Add(4 * time.Second)},
	}
}

func testTokens(t *testing.T, s store.Store) {
	at := base()
	toks := sampleTokens(at)
	write(t, s, func(tx store.Tx) error {
		for _, tok := range toks {
			if err := tx.PutToken(tok); err != nil {
				return err
			}
		}
		return nil
	})

	read(t, s, func(tx store.Tx) error {
		for _, want := range toks {
			got, err := tx.TokenByHash(want.Hash)
			if err != nil {
				return fmt.Errorf("TokenByHash(%s): %w", want.ID, err)
			}
			check(t, "TokenByHash("+want.ID+")", got, want, normToken)
		}
		_, err := tx.TokenByHash([]byte("no such hash"))
		wantErr(t, "TokenByHash of an unknown hash", err, store.ErrNotFound)

		all, err := tx.Tokens()
		if err != nil {
			return fmt.Errorf("Tokens: %w", err)
		}
		checkAll(t, "Tokens newest first", all, []store.Token{toks[4], toks[3], toks[2], toks[1], toks[0]}, normToken)
		// Expiry is kept as stored (a past one too): the store does not judge it.
		for _, got := range all {
			if got.ID == "tok-user" && !got.ExpiresAt.Equal(toks[1].ExpiresAt) {
				t.Errorf("tok-user ExpiresAt %v, want %v", got.ExpiresAt, toks[1].ExpiresAt)
			}
			if got.ID == "tok-admin" && !got.ExpiresAt.IsZero() {
				t.Errorf("tok-admin has no expiry, got ExpiresAt %v", got.ExpiresAt)
			}
		}
		return nil
	})

	revokedAt := at.Add(time.Hour + 987654321)
	write(t, s, func(tx store.Tx) error { return tx.RevokeToken("tok-user", revokedAt) })
	err := s.Write(t.Context(), func(tx store.Tx) error { return tx.RevokeToken("absent", revokedAt) })
	wantErr(t, "RevokeToken(absent)", err, store.ErrNotFound)
	read(t, s, func(tx store.Tx) error {
		// A revoked token is still found by its hash, with its revocation time.
		got, err := tx.TokenByHash(toks[1].Hash)
		if err != nil {
			return fmt.Errorf("TokenByHash of a revoked token: %w", err)
		}
		want := toks[1]
		want.RevokedAt = revokedAt
		check(t, "revoked token", got, want, normToken)
		if !got.RevokedAt.Equal(revokedAt) {
			t.Errorf("RevokedAt %v, want %v", got.RevokedAt, revokedAt)
		}
		other, err := tx.TokenByHash(toks[0].Hash)
		if err != nil {
			return fmt.Errorf("TokenByHash(tok-admin): %w", err)
		}
		if !other.RevokedAt.IsZero() {
			t.Errorf("RevokeToken(tok-user) revoked tok-admin too: %v", other.RevokedAt)
		}
		return nil
	})

	write(t, s, func(tx store.Tx) error {
		if err := tx.DeletePluginTokens("p1"); err != nil {
			return err
		}
		return tx.DeletePluginTokens("no-such-plugin")
	})
	read(t, s, func(tx store.Tx) error {
		all, err := tx.Tokens()
		if err != nil {
			return fmt.Errorf("Tokens: %w", err)
		}
		want := []store.Token{toks[3], toks[1], toks[0]}
		want[1].RevokedAt = revokedAt
		checkAll(t, "Tokens after DeletePluginTokens(p1)", all, want, normToken)
		_, err = tx.TokenByHash(toks[2].Hash)
		wantErr(t, "TokenByHash of a deleted plugin token", err, store.ErrNotFound)
		return nil
	})
}

func testTokenConflicts(t *testing.T, s store.Store) {
	at := base()
	orig := store.Token{ID: "tok-1", Name: "one", Role: store.RoleUser, Hash: []byte("hash-1"), CreatedAt: at}
	write(t, s, func(tx store.Tx) error { return tx.PutToken(orig) })

	tests := []struct {
		name string
		tok  store.Token
	}{
		{"same id", store.Token{ID: "tok-1", Name: "other", Role: store.RoleAdmin, Hash: []byte("hash-2"), CreatedAt: at}},
		{"same hash", store.Token{ID: "tok-2", Name: "other", Role: store.RoleAdmin, Hash: []byte("hash-1"), CreatedAt: at}},
		{"same id and hash", orig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Write(t.Context(), func(tx store.Tx) error { return tx.PutToken(tc.tok) })
			wantErr(t, "PutToken", err, store.ErrConflict)
		})
	}
	read(t, s, func(tx store.Tx) error {
		all, err := tx.Tokens()
		if err != nil {
			return fmt.Errorf("Tokens: %w", err)
		}
		checkAll(t, "Tokens after conflicts", all, []store.Token{orig}, normToken)
		return nil
	})
}
