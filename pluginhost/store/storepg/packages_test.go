package storepg_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// TestPackages: package files are kept once by their sha256, read back byte for byte, and
// pruned only when no plugin, backup or update in flight refers to them and they were
// stored before the given time.
func TestPackages(t *testing.T) {
	s := open(t, shared.NewDatabase(t))
	ctx := t.Context()
	kept, old := []byte("package of a plugin\x00\xff"), []byte("package nobody refers to")
	var keptSHA, oldSHA string
	err := s.Write(ctx, func(tx store.Tx) error {
		pt := tx.(store.PackageTx)
		var err error
		if keptSHA, err = pt.PutPackage(kept); err != nil {
			return err
		}
		if _, err = pt.PutPackage(kept); err != nil { // stored once
			return err
		}
		if oldSHA, err = pt.PutPackage(old); err != nil {
			return err
		}
		return tx.PutPlugin(store.Plugin{ID: "p1", Version: "1.0.0", PackageSHA256: keptSHA})
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(kept); keptSHA != hex.EncodeToString(sum[:]) {
		t.Fatalf("sha256 %s", keptSHA)
	}
	prune := func(before time.Time) int {
		t.Helper()
		var n int
		if err := s.Write(ctx, func(tx store.Tx) error {
			var err error
			n, err = tx.(store.PackageTx).PrunePackages(before)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := prune(time.Now().Add(-time.Hour)); n != 0 {
		t.Fatalf("pruned %d files stored just now", n)
	}
	if n := prune(time.Now().Add(time.Second)); n != 1 {
		t.Fatalf("pruned %d, want the one nobody refers to", n)
	}
	err = s.Read(ctx, func(tx store.Tx) error {
		pt := tx.(store.PackageTx)
		got, err := pt.Package(keptSHA)
		if err != nil || string(got) != string(kept) {
			t.Errorf("Package(kept) = %q, %v", got, err)
		}
		if _, err := pt.Package(oldSHA); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Package(pruned) = %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
