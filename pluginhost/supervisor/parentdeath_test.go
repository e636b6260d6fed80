package supervisor_test

import (
	"bufio"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPluginDiesWithHost SIGKILLs a host process (this binary in "parent"
// mode) that started a plugin with the supervisor, and checks that the
// plugin does not outlive it.
func TestPluginDiesWithHost(t *testing.T) {
	t.Parallel()
	host := exec.Command(testBinary(t))
	host.Env = []string{helperEnv + "=parent", raceEnv}
	stdout, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = host.Process.Kill()
		_ = host.Wait()
	})

	pids := make(chan int, 1)
	go func() { // ends when the host's stdout closes, at the latest when it is killed
		defer close(pids)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "child "); ok {
				if pid, err := strconv.Atoi(rest); err == nil {
					pids <- pid
				}
			} else {
				t.Logf("host: %s", sc.Text())
			}
		}
	}()
	var child int
	select {
	case pid, ok := <-pids:
		if !ok {
			t.Fatal("host exited without starting the plugin")
		}
		child = pid
	case <-time.After(20 * time.Second):
		t.Fatal("host did not report the plugin's PID")
	}
	if gone(child) {
		t.Fatalf("plugin %d not running before the host is killed", child)
	}

	if err := host.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = host.Wait()
	eventually(t, 2*time.Second, func() bool { return gone(child) }, "plugin %d to die with its host", child)
}
