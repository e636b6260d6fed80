package secrets_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/secrets"
)

func newBox(t testing.TB, fill byte) *secrets.Box {
	t.Helper()
	b, err := secrets.New(bytes.Repeat([]byte{fill}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewKeyLength(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		t.Run(strings.Repeat("k", n), func(t *testing.T) {
			if _, err := secrets.New(make([]byte, n)); err == nil {
				t.Fatalf("New accepted a %d-byte key", n)
			}
		})
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	b := newBox(t, 1)
	for _, plaintext := range [][]byte{nil, {}, []byte("x"), []byte("new_secret_key"), bytes.Repeat([]byte{0, 0xff}, 1<<16)} {
		t.Run(string(plaintext[:min(len(plaintext), 8)]), func(t *testing.T) {
			sealed := b.Seal(plaintext)
			if !strings.HasPrefix(sealed, secrets.Prefix) || !secrets.IsSealed(sealed) {
				t.Fatalf("Seal = %q, not sealed", sealed)
			}
			if len(plaintext) >= 8 && strings.Contains(sealed, string(plaintext)) {
				t.Fatal("sealed string contains the plaintext")
			}
			got, err := b.Open(sealed)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plaintext) || got == nil {
				t.Fatalf("Open = %q, want %q", got, plaintext)
			}
		})
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	t.Parallel()
	b := newBox(t, 1)
	seen := map[string]bool{}
	for range 100 {
		s := b.Seal([]byte("same"))
		if seen[s] {
			t.Fatal("Seal repeated a sealed string")
		}
		seen[s] = true
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	b := newBox(t, 1)
	sealed := b.Seal([]byte("secret value"))
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, secrets.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	reseal := func(mutate func([]byte)) string {
		c := bytes.Clone(raw)
		mutate(c)
		return secrets.Prefix + base64.StdEncoding.EncodeToString(c)
	}
	cases := []struct {
		name string
		box  *secrets.Box
		s    string
		want error
	}{
		{"wrong key", newBox(t, 2), sealed, secrets.ErrDecrypt},
		{"tampered nonce", b, reseal(func(c []byte) { c[0] ^= 1 }), secrets.ErrDecrypt},
		{"tampered ciphertext", b, reseal(func(c []byte) { c[14] ^= 0x80 }), secrets.ErrDecrypt},
		{"tampered tag", b, reseal(func(c []byte) { c[len(c)-1] ^= 1 }), secrets.ErrDecrypt},
		{"truncated", b, secrets.Prefix + base64.StdEncoding.EncodeToString(raw[:len(raw)-1]), secrets.ErrDecrypt},
		{"extended", b, secrets.Prefix + base64.StdEncoding.EncodeToString(append(bytes.Clone(raw), 0)), secrets.ErrDecrypt},
		{"untouched", b, reseal(func([]byte) {}), nil},
		{"too short", b, secrets.Prefix + base64.StdEncoding.EncodeToString(raw[:27]), secrets.ErrMalformed},
		{"no prefix", b, strings.TrimPrefix(sealed, secrets.Prefix), secrets.ErrMalformed},
		{"other version", b, "nxs2:" + strings.TrimPrefix(sealed, secrets.Prefix), secrets.ErrMalformed},
		{"bad base64", b, sealed[:len(sealed)-2] + "!!", secrets.ErrMalformed},
		{"plaintext", b, "new_secret_key", secrets.ErrMalformed},
		{"empty", b, "", secrets.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := c.box.Open(c.s)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Open = %v, want success", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Open error = %v, want %v", err, c.want)
			}
		})
	}
}

func TestIsSealed(t *testing.T) {
	t.Parallel()
	sealed := newBox(t, 1).Seal([]byte("x"))
	cases := []struct {
		s    string
		want bool
	}{
		{sealed, true},
		{"", false},
		{"nxs1:", false},
		{"nxs1:AAAA", false},
		{"***hidden***", false},
		{"nxs1:" + strings.Repeat("A", 40), true},
		{" " + sealed, false},
	}
	for _, c := range cases {
		t.Run(c.s, func(t *testing.T) {
			if got := secrets.IsSealed(c.s); got != c.want {
				t.Fatalf("IsSealed(%q) = %v, want %v", c.s, got, c.want)
			}
		})
	}
}

func TestBoxConcurrentUse(t *testing.T) {
	t.Parallel()
	b := newBox(t, 3)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				p := []byte{byte(i)}
				got, err := b.Open(b.Seal(p))
				if err != nil || !bytes.Equal(got, p) {
					t.Errorf("round trip failed: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}
