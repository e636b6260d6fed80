package runtime_test

import (
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/runtime"
)

// The token of a crashed process is revoked as soon as the crash is seen, not when the
// restart (after its backoff, here an hour) launches the next process.
func TestCrashRevokesTheTokenBeforeTheRestart(t *testing.T) {
	f := newFixture(t, runtime.Config{BackoffMin: time.Hour, BackoffMax: time.Hour})
	p := f.install(spec{id: "crashy-plugin", mode: "serve"})
	f.mustEnable("crashy-plugin")
	first := p.current()
	if f.tokens.isRevoked(first.tokenID) {
		t.Fatal("the token of the running process is revoked")
	}
	first.crash(t)
	eventually(t, 20*time.Second, func() bool { return f.tokens.isRevoked(first.tokenID) }, "the crashed process's token to be revoked")
}
