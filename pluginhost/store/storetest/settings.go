package storetest

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

func testSettings(t *testing.T, s store.Store) {
	read(t, s, func(tx store.Tx) error {
		_, err := tx.Setting("absent")
		wantErr(t, "Setting(absent)", err, store.ErrNotFound)
		return nil
	})

	steps := []struct {
		name  string
		key   string
		value []byte
	}{
		{"text", "server.name", []byte("nexus-1")},
		{"binary", "server.key", []byte{0, 1, 2, 0, 0xfe, 0xff}},
		{"overwrite", "server.name", []byte("nexus-2")},
		{"empty value", "server.motd", []byte{}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			write(t, s, func(tx store.Tx) error { return tx.PutSetting(st.key, st.value) })
			read(t, s, func(tx store.Tx) error {
				got, err := tx.Setting(st.key)
				if err != nil {
					return fmt.Errorf("Setting(%s): %w", st.key, err)
				}
				if !bytes.Equal(got, st.value) {
					t.Errorf("Setting(%s) = %q, want %q", st.key, got, st.value)
				}
				return nil
			})
		})
	}
	read(t, s, func(tx store.Tx) error {
		got, err := tx.Setting("server.key")
		if err != nil {
			return fmt.Errorf("Setting(server.key): %w", err)
		}
		if !bytes.Equal(got, steps[1].value) {
			t.Errorf("Setting(server.key) changed by writes to other keys: %q", got)
		}
		return nil
	})
}
