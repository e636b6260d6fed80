package storepg_test

import (
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// Reads and writes tell the database's clock, which moves within a transaction.
func TestTransactionsTellTheDatabaseClock(t *testing.T) {
	s := open(t, shared.NewDatabase(t))
	for name, run := range map[string]func(fn func(store.Tx) error) error{
		"read":  func(fn func(store.Tx) error) error { return s.Read(t.Context(), fn) },
		"write": func(fn func(store.Tx) error) error { return s.Write(t.Context(), fn) },
	} {
		t.Run(name, func(t *testing.T) {
			err := run(func(tx store.Tx) error {
				c, ok := tx.(store.ClockTx)
				if !ok {
					t.Fatalf("a %s transaction does not implement store.ClockTx", name)
				}
				first, err := c.Now()
				if err != nil {
					return err
				}
				// The database runs on this machine: its clock is this process's.
				if d := time.Since(first); d < -time.Second || d > time.Second {
					t.Errorf("the database's clock is %s off this process's", d)
				}
				time.Sleep(10 * time.Millisecond)
				second, err := c.Now()
				if err != nil {
					return err
				}
				if !second.After(first) {
					t.Errorf("the clock did not move within the transaction: %s, then %s", first, second)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
