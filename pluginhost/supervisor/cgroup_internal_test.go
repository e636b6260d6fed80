package supervisor

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCgroupPlacement exercises the cgroup v2 mechanics (creation, placing
// the process at clone time or through cgroup.procs, killing what is left,
// removal) on whatever cgroup v2 hierarchy this host has, even one without
// the memory and cpu controllers, which the black-box tests cannot force.
// The helper modes are in helper_test.go (TestMain).
func TestCgroupPlacement(t *testing.T) {
	// Not parallel: it creates nexus-<pid> below the host's cgroup, as the
	// package's own cgroup manager may.
	mount, own, err := ownCgroup2()
	if err != nil {
		t.Skipf("no cgroup v2 hierarchy: %v", err)
	}
	base := filepath.Join(mount, own)
	if err := unix.Access(base, unix.W_OK); err != nil {
		t.Skipf("cgroup %s not writable: %v", base, err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		noCgroupFD bool
	}{
		{"clone into cgroup", false},
		{"cgroup.procs before the plan", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &cgroupManager{probed: true, base: base}
			var (
				cgPath    string
				createErr error
			)
			plan := func(s *Spec) (launchPlan, Enforcement) {
				cg, err := m.create(s.PluginID, cgroupLimits{})
				if err != nil {
					createErr = err
					return launchPlan{}, Enforcement{}
				}
				cgPath = cg.path
				return launchPlan{cg: cg, noCgroupFD: tc.noCgroupFD}, Enforcement{}
			}
			var (
				mu    sync.Mutex
				lines []string
			)
			spec := Spec{
				PluginID: "cgroup-test",
				Path:     exe,
				Env:      []string{"SUPERVISOR_TEST_HELPER=cgroup-self", "GORACE=atexit_sleep_ms=0"},
				Output: func(stream, line string, _ bool) {
					if stream == StreamStdout {
						mu.Lock()
						lines = append(lines, line)
						mu.Unlock()
					}
				},
			}
			p, err := start(spec, plan)
			if createErr != nil {
				t.Skipf("cannot create a cgroup below %s: %v", base, createErr)
			}
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			select {
			case <-p.Done():
			case <-time.After(20 * time.Second):
				p.Stop(t.Context(), 0)
				t.Fatal("process not done")
			}
			if st := p.Exit(); st.Code != 0 {
				t.Errorf("exit = %v", st)
			}
			mu.Lock()
			defer mu.Unlock()
			t.Logf("output: %q", lines)

			// The process saw itself in its cgroup as its first act.
			want := "cgroup 0::" + strings.TrimPrefix(cgPath, mount)
			if len(lines) != 2 || lines[0] != want {
				t.Fatalf("output = %q, want %q first", lines, want)
			}
			// The grandchild left the process group but not the cgroup, so
			// it was killed when the plugin exited.
			gc, err := strconv.Atoi(strings.TrimPrefix(lines[1], "grandchild "))
			if err != nil {
				t.Fatal(err)
			}
			if !processGone(gc) {
				_ = unix.Kill(gc, unix.SIGKILL)
				t.Errorf("grandchild %d survived the plugin", gc)
			}
			// Everything is removed again.
			if _, err := os.Stat(cgPath); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("cgroup %s not removed: %v", cgPath, err)
			}
			var users int
			var dir string
			theLauncher.do(func() { users, dir = m.users, m.dir })
			if users != 0 || dir != "" {
				t.Errorf("manager still has %d users of %q", users, dir)
			}
			if _, err := os.Stat(filepath.Dir(cgPath)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("parent cgroup %s not removed: %v", filepath.Dir(cgPath), err)
			}
		})
	}
}

func TestOwnCgroup2(t *testing.T) {
	t.Parallel()
	mount, own, err := ownCgroup2()
	if err != nil {
		t.Skipf("no cgroup v2 hierarchy: %v", err)
	}
	t.Logf("cgroup2 mounted at %s, this process in %s", mount, own)
	b, err := os.ReadFile(filepath.Join(mount, own, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(b)), strconv.Itoa(os.Getpid())) {
		t.Errorf("pid %d not in %s/cgroup.procs", os.Getpid(), filepath.Join(mount, own))
	}
}

func TestCut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"abc", 5, "abc"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},                  // half of é
		{"a€", 3, "a"},                  // two thirds of €
		{"a€", 4, "a€"},                 // exactly
		{"a😀b", 4, "a"},                 // three quarters of 😀
		{"\xff\xff\xff", 2, "\xff\xff"}, // not UTF-8: cut anywhere
	} {
		if got := string(cut([]byte(tc.in), tc.max)); got != tc.want {
			t.Errorf("cut(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestCgroupName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"auth-plugin":            "auth-plugin",
		"../../etc":              "______etc",
		"":                       "plugin",
		"Weird Name/x":           "Weird_Name_x",
		strings.Repeat("a", 100): strings.Repeat("a", 64),
	} {
		if got := cgroupName(in); got != want {
			t.Errorf("cgroupName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	t.Parallel()
	if got := unescapeMount(`/sys/fs/my\040cgroup`); got != "/sys/fs/my cgroup" {
		t.Errorf("unescapeMount = %q", got)
	}
}

// processGone reports whether pid no longer runs (absent or a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || strings.HasPrefix(string(b[i+1:]), " Z")
}
