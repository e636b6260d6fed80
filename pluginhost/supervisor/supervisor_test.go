package supervisor_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

func TestExitCodeAndOutputInOrder(t *testing.T) {
	t.Parallel()
	spec, rec := helperSpec(t, "echo", "3")
	p := start(t, spec)
	if p.PID() <= 0 {
		t.Fatalf("PID() = %d", p.PID())
	}
	st := waitExit(t, p, 20*time.Second)
	if st.Code != 3 || st.Signal != "" || st.OOMKilled {
		t.Errorf("Exit() = %+v, want code 3", st)
	}
	if got, want := st.String(), "exited with code 3"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	for _, s := range []struct{ stream, prefix string }{
		{supervisor.StreamStdout, "out"},
		{supervisor.StreamStderr, "err"},
	} {
		var want []string
		for i := range 200 {
			want = append(want, fmt.Sprintf("%s %d", s.prefix, i))
		}
		if got := rec.texts(s.stream); !slices.Equal(got, want) {
			t.Errorf("%s: got %d lines %q..., want %d lines in order", s.stream, len(got), head(got), len(want))
		}
	}
}

func TestFinalLineWithoutNewlineAndCRLF(t *testing.T) {
	t.Parallel()
	spec, rec := helperSpec(t, "partial")
	p := start(t, spec)
	waitExit(t, p, 20*time.Second)
	if got, want := rec.get(supervisor.StreamStdout), []line{{"first", false}, {"second", false}}; !slices.Equal(got, want) {
		t.Errorf("lines = %+v, want %+v", got, want)
	}
}

func TestEnvironmentIsExactlySpecEnv(t *testing.T) {
	t.Parallel()
	spec, rec := helperSpec(t, "env")
	spec.Env = append(spec.Env, "NEXUS_PLUGIN_ID=test-env", "EMPTY=", "WITH_EQUALS=a=b")
	p := start(t, spec)
	waitExit(t, p, 20*time.Second)
	got := rec.texts(supervisor.StreamStdout)
	want := slices.Clone(spec.Env)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("child environment = %q, want exactly %q", got, want)
	}
}

func TestWorkingDirectory(t *testing.T) {
	t.Parallel()
	spec, rec := helperSpec(t, "pwd")
	p := start(t, spec)
	if st := waitExit(t, p, 20*time.Second); st.Code != 0 {
		t.Fatalf("exit %v, output %q", st, rec.texts(supervisor.StreamStdout))
	}
	want, err := filepath.EvalSymlinks(spec.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.texts(supervisor.StreamStdout); len(got) != 1 || got[0] != want {
		t.Errorf("child working directory = %q, want %q", got, want)
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	valid, _ := helperSpec(t, "echo")
	for _, tc := range []struct {
		name    string
		edit    func(*supervisor.Spec)
		invalid bool
		is      error
	}{
		{"empty plugin ID", func(s *supervisor.Spec) { s.PluginID = "" }, true, nil},
		{"relative path", func(s *supervisor.Spec) { s.Path = "bin/plugin" }, true, nil},
		{"negative limit", func(s *supervisor.Spec) { s.Limits.MemoryMB = -1 }, true, nil},
		{"negative line length", func(s *supervisor.Spec) { s.MaxLineBytes = -1 }, true, nil},
		{"huge line length", func(s *supervisor.Spec) { s.MaxLineBytes = 1<<20 + 1 }, true, nil},
		{"missing executable", func(s *supervisor.Spec) { s.Path = filepath.Join(s.Dir, "missing") }, false, fs.ErrNotExist},
		{"missing executable with limits", func(s *supervisor.Spec) {
			s.Path = filepath.Join(s.Dir, "missing")
			s.Limits = supervisor.Limits{FileHandles: 64, MemoryMB: 512}
		}, false, fs.ErrNotExist},
		{"missing directory", func(s *supervisor.Spec) { s.Dir = filepath.Join(s.Dir, "missing") }, false, fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := valid
			tc.edit(&spec)
			p, err := supervisor.Start(spec)
			if err == nil {
				p.Stop(t.Context(), 0)
				t.Fatal("Start succeeded, want an error")
			}
			if got := errors.Is(err, supervisor.ErrInvalidSpec); got != tc.invalid {
				t.Errorf("errors.Is(%v, ErrInvalidSpec) = %v, want %v", err, got, tc.invalid)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
}

func TestSignal(t *testing.T) {
	t.Parallel()
	spec, rec := helperSpec(t, "sleep")
	p := start(t, spec)
	rec.waitFor(t, supervisor.StreamStdout, "ready")
	if st := p.Exit(); st != (supervisor.ExitStatus{}) {
		t.Errorf("Exit() before Done = %+v, want the zero value", st)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	st := waitExit(t, p, 10*time.Second)
	if st.Signal != "terminated" || st.Code != -1 {
		t.Errorf("Exit() = %+v, want killed by SIGTERM", st)
	}
	if got, want := st.String(), "killed by signal SIGTERM"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit = %v, want os.ErrProcessDone", err)
	}
	if _, err := p.Usage(); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Usage after exit = %v, want os.ErrProcessDone", err)
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	spec, rec := helperSpec(t, "sleep")
	p := start(t, spec)
	rec.waitFor(t, supervisor.StreamStdout, "ready")
	u, err := p.Usage()
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	t.Logf("usage of a sleeping helper: %+v", u)
	if u.RSSBytes <= 0 || u.OpenFiles < 3 || u.Threads < 1 || u.CPUSeconds < 0 || u.CPUSeconds > 60 {
		t.Errorf("Usage() = %+v, want RSS > 0, at least 3 open files and 1 thread", u)
	}
}

func TestGoroutinesReturnToBaseline(t *testing.T) {
	// Not parallel: it counts the goroutines of the whole test binary.
	supervisor.Capabilities() // starts the launcher goroutine, which lives as long as the process
	base := runtime.NumGoroutine()
	for range 3 {
		spec, _ := helperSpec(t, "echo", "0")
		waitExit(t, start(t, spec), 20*time.Second)
	}
	spec, rec := helperSpec(t, "spawn", "group", "stay")
	p := start(t, spec)
	rec.waitForPID(t, "grandchild ")
	p.Stop(t.Context(), 100*time.Millisecond)
	eventually(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= base },
		"goroutines to return to %d (now %d)", base, runtime.NumGoroutine())
}

// head returns the first few elements of s, for messages.
func head(s []string) []string {
	return s[:min(len(s), 3)]
}
