package supervisor_test

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

func TestStopWithinGrace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode       string
		wantCode   int
		wantSignal string
	}{
		{"term-exit", 0, ""},        // handles SIGTERM and exits 0
		{"sleep", -1, "terminated"}, // dies of SIGTERM's default action
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			spec, rec := helperSpec(t, tc.mode)
			p := start(t, spec)
			rec.waitFor(t, supervisor.StreamStdout, "ready")
			began := time.Now()
			st := p.Stop(t.Context(), 20*time.Second)
			if elapsed := time.Since(began); elapsed > 10*time.Second {
				t.Errorf("Stop took %v although the process exits on SIGTERM", elapsed)
			}
			if st.Code != tc.wantCode || st.Signal != tc.wantSignal {
				t.Errorf("Stop() = %+v, want code %d signal %q", st, tc.wantCode, tc.wantSignal)
			}
			assertDone(t, p)
			if !gone(p.PID()) {
				t.Errorf("process %d still exists after Stop", p.PID())
			}
		})
	}
	t.Run("output drained", func(t *testing.T) {
		t.Parallel()
		spec, rec := helperSpec(t, "term-exit")
		p := start(t, spec)
		rec.waitFor(t, supervisor.StreamStdout, "ready")
		p.Stop(t.Context(), 20*time.Second)
		// Stop returns only once the last line has been delivered.
		if got := rec.texts(supervisor.StreamStdout); len(got) != 2 || got[1] != "got SIGTERM" {
			t.Errorf("output after Stop = %q, want the line written on SIGTERM", got)
		}
	})
}

func TestStopKillsAfterGrace(t *testing.T) {
	t.Parallel()
	spec, rec := helperSpec(t, "ignore-term")
	p := start(t, spec)
	rec.waitFor(t, supervisor.StreamStdout, "ready")
	const grace = 300 * time.Millisecond
	began := time.Now()
	st := p.Stop(t.Context(), grace)
	if elapsed := time.Since(began); elapsed < grace {
		t.Errorf("Stop returned after %v, before the grace period of %v", elapsed, grace)
	}
	if st.Signal != "killed" {
		t.Errorf("Stop() = %+v, want killed", st)
	}
	if got, want := st.String(), "killed by signal SIGKILL"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	assertDone(t, p)
	if !gone(p.PID()) {
		t.Errorf("process %d still exists after Stop", p.PID())
	}
}

func TestStopKillsProcessGroup(t *testing.T) {
	t.Parallel()
	// The plugin ignores SIGTERM; its grandchild holds the plugin's stderr, so
	// output is drained only once it is dead too.
	spec, rec := helperSpec(t, "spawn", "group", "stay")
	p := start(t, spec)
	grandchild := rec.waitForPID(t, "grandchild ")
	if gone(grandchild) {
		t.Fatalf("grandchild %d not running", grandchild)
	}
	st := p.Stop(t.Context(), 200*time.Millisecond)
	if st.Signal != "killed" {
		t.Errorf("Stop() = %+v, want killed", st)
	}
	for _, pid := range []int{p.PID(), grandchild} {
		eventually(t, 2*time.Second, func() bool { return gone(pid) }, "process %d to be gone", pid)
	}
}

func TestStopIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	spec, _ := helperSpec(t, "echo", "7")
	p := start(t, spec) // races its own natural exit
	var wg sync.WaitGroup
	results := make([]supervisor.ExitStatus, 4)
	for i := range results {
		wg.Go(func() { results[i] = p.Stop(context.Background(), time.Duration(i)*time.Second) })
	}
	wg.Wait()
	for i, st := range results {
		if st != results[0] {
			t.Errorf("Stop #%d = %+v, Stop #0 = %+v", i, st, results[0])
		}
	}
	if again := p.Stop(context.Background(), time.Second); again != results[0] || p.Exit() != results[0] {
		t.Errorf("Stop after exit = %+v, Exit() = %+v, want %+v", again, p.Exit(), results[0])
	}
}

func TestStopCancelledContextKillsAtOnce(t *testing.T) {
	t.Parallel()
	spec, rec := helperSpec(t, "ignore-term")
	p := start(t, spec)
	rec.waitFor(t, supervisor.StreamStdout, "ready")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	began := time.Now()
	st := p.Stop(ctx, time.Hour)
	if elapsed := time.Since(began); elapsed > 10*time.Second {
		t.Errorf("Stop with a cancelled context took %v", elapsed)
	}
	if st.Signal != "killed" {
		t.Errorf("Stop() = %+v, want killed", st)
	}
}

func TestNaturalExitKillsRestOfGroup(t *testing.T) {
	t.Parallel()
	spec, rec := helperSpec(t, "spawn", "group", "exit")
	p := start(t, spec)
	st := waitExit(t, p, 20*time.Second)
	if st.Code != 0 {
		t.Errorf("exit = %v, want code 0", st)
	}
	grandchild := rec.waitForPID(t, "grandchild ")
	eventually(t, 2*time.Second, func() bool { return gone(grandchild) }, "grandchild %d to be gone", grandchild)
}

func TestEscapedGrandchildDoesNotHoldDone(t *testing.T) {
	t.Parallel()
	// The grandchild leaves the process group (setsid) and keeps stderr
	// open. Without a cgroup nothing kills it, so Done must not wait for
	// end-of-file forever.
	spec, rec := helperSpec(t, "spawn", "setsid", "exit")
	p := start(t, spec)
	grandchild := rec.waitForPID(t, "grandchild ")
	t.Cleanup(func() { _ = syscall.Kill(grandchild, syscall.SIGKILL) })
	if st := waitExit(t, p, 15*time.Second); st.Code != 0 {
		t.Errorf("exit = %v, want code 0", st)
	}
}

// assertDone fails the test if p is not done.
func assertDone(t *testing.T, p *supervisor.Process) {
	t.Helper()
	select {
	case <-p.Done():
	default:
		t.Errorf("Done not closed after Stop returned")
	}
}
