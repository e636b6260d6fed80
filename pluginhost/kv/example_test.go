package kv_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/kv"
	"github.com/nexus-platform/nexus/pluginhost/store/storesqlite"
)

func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kv-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	st, err := storesqlite.Open(ctx, filepath.Join(dir, "nexus.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	s := kv.New(st, kv.Options{})

	e, err := s.Put(ctx, "analytics", "config/window", []byte(`{"minutes":5}`), 0)
	fmt.Println(e.Version, err)

	// Two writers both read version 1; only the first compare-and-set wins.
	e, ok, err := s.CompareAndSet(ctx, "analytics", "config/window", []byte(`{"minutes":10}`), 0, 1)
	fmt.Println(e.Version, ok, err)
	e, ok, err = s.CompareAndSet(ctx, "analytics", "config/window", []byte(`{"minutes":15}`), 0, 1)
	fmt.Println(e.Version, string(e.Value), ok, err)

	_, err = s.Put(ctx, "analytics", "session", []byte(`not json`), time.Hour)
	fmt.Println(errs.CodeOf(err))

	// Let the dashboard plugin read analytics' entries.
	if err := s.Share(ctx, "analytics", []string{"dashboard"}); err != nil {
		fmt.Println(err)
		return
	}
	ok, err = s.CanRead(ctx, "dashboard", "analytics")
	fmt.Println(ok, err)
	// Output:
	// 1 <nil>
	// 2 true <nil>
	// 2 {"minutes":10} false <nil>
	// VALIDATION_ERROR
	// true <nil>
}
