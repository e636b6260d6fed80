package storepg_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/store/storepg/pgtest"
)

// shared is the PostgreSQL server the tests share, each with databases of its own.
var shared *pgtest.Server

func TestMain(m *testing.M) {
	srv, err := pgtest.StartServer(pgtest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "storepg tests need PostgreSQL (apt-get install -y postgresql):", err)
		os.Exit(1)
	}
	shared = srv
	code := m.Run()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
