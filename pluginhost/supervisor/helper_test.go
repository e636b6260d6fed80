package supervisor_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// helperEnv switches the test binary into a helper process that plays a
// plugin (or a host); its value names the behaviour, see runHelper.
const helperEnv = "SUPERVISOR_TEST_HELPER"

// raceEnv stops a helper built with -race from sleeping a second at exit
// (ThreadSanitizer's atexit_sleep_ms); other binaries ignore it.
const raceEnv = "GORACE=atexit_sleep_ms=0"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runHelper is the main function of the helper processes.
func runHelper(mode string, args []string) int {
	arg := func(i int) string {
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	num := func(i int) int {
		n, _ := strconv.Atoi(arg(i))
		return n
	}
	switch mode {
	case "echo": // interleaved numbered lines on both streams, exit with args[0]
		for i := range 200 {
			fmt.Fprintf(os.Stdout, "out %d\n", i)
			fmt.Fprintf(os.Stderr, "err %d\n", i)
		}
		return num(0)
	case "print": // each argument as a line on stdout
		for _, a := range args {
			fmt.Println(a)
		}
		return 0
	case "partial": // CRLF, then a last line without a newline
		os.Stdout.WriteString("first\r\nsecond")
		return 0
	case "env":
		for _, e := range os.Environ() {
			fmt.Println(e)
		}
		return 0
	case "pwd":
		wd, err := os.Getwd()
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println(wd)
		return 0
	case "sleep":
		fmt.Println("ready")
		time.Sleep(time.Hour)
		return 0
	case "term-exit": // exits 0 on SIGTERM
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("ready")
		<-c
		fmt.Println("got SIGTERM")
		return 0
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Hour)
		return 0
	case "spawn": // a grandchild sharing stderr; args: "group"|"setsid", "stay"|"exit"
		self, err := os.Executable()
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		cmd := exec.Command(self)
		cmd.Env = []string{helperEnv + "=sleep", raceEnv}
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: arg(0) == "setsid"}
		if err := cmd.Start(); err != nil {
			fmt.Println("error", err)
			return 1
		}
		if arg(1) == "exit" {
			fmt.Printf("grandchild %d\n", cmd.Process.Pid)
			return 0
		}
		// Ignored before the line that tells the test to stop it: a SIGTERM that came
		// first would end it (a flake, seen under load).
		signal.Ignore(syscall.SIGTERM)
		fmt.Printf("grandchild %d\n", cmd.Process.Pid)
		time.Sleep(time.Hour)
		return 0
	case "cgroup-self": // own cgroup as seen first thing, then like "spawn setsid exit"
		b, _ := os.ReadFile("/proc/self/cgroup")
		for line := range strings.Lines(string(b)) {
			if strings.HasPrefix(line, "0::") {
				fmt.Print("cgroup ", line)
			}
		}
		return runHelper("spawn", []string{"setsid", "exit"})
	case "parent": // a host: starts a plugin with the supervisor, then waits to be killed
		self, err := os.Executable()
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		p, err := supervisor.Start(supervisor.Spec{PluginID: "orphan", Path: self, Env: []string{helperEnv + "=sleep", raceEnv}})
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Printf("child %d\n", p.PID())
		time.Sleep(time.Hour)
		return 0
	case "files": // reports its file limit, then opens files until it fails
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Printf("nofile %d %d\n", lim.Cur, lim.Max)
		var files []*os.File
		for range num(0) {
			f, err := os.Open(os.DevNull)
			if err != nil {
				fmt.Println("error", err)
				break
			}
			files = append(files, f)
		}
		fmt.Printf("opened %d\n", len(files))
		return 0
	case "alloc": // args: total MiB, "touch" to make the pages resident
		var keep [][]byte
		for len(keep)*64 < num(0) {
			b := make([]byte, 64<<20)
			if arg(1) == "touch" {
				for i := 0; i < len(b); i += 4096 {
					b[i] = 1
				}
			}
			keep = append(keep, b)
		}
		fmt.Printf("allocated %d MiB\n", len(keep)*64)
		return 0
	case "busy": // burns CPU for args[0] ms of wall time, reports CPU time used
		end := time.Now().Add(time.Duration(num(0)) * time.Millisecond)
		for time.Now().Before(end) {
		}
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Printf("cpu %.3f\n", cpu.Seconds())
		return 0
	case "oversize": // a line of exactly args[0] bytes, a 1 MiB line, two short lines
		w := bufio.NewWriter(os.Stdout)
		w.WriteString(strings.Repeat("a", num(0)) + "\n")
		w.WriteString(strings.Repeat("x", 1<<20) + "\n")
		w.WriteString("after 1\nafter 2\n")
		w.Flush()
		return 0
	case "flood": // args[0] MiB of 1 KiB lines, then an 8 MiB line without newline
		w := bufio.NewWriterSize(os.Stdout, 64<<10)
		line := strings.Repeat("f", 1023) + "\n"
		for range num(0) << 10 {
			w.WriteString(line)
		}
		chunk := strings.Repeat("y", 1<<20)
		for range 8 {
			w.WriteString(chunk)
		}
		w.Flush()
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// line is one line of output received through Spec.Output.
type line struct {
	text      string
	truncated bool
}

// recorder collects the output of a process.
type recorder struct {
	mu    sync.Mutex
	lines map[string][]line
}

func (r *recorder) output(stream, text string, truncated bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lines == nil {
		r.lines = make(map[string][]line)
	}
	r.lines[stream] = append(r.lines[stream], line{text, truncated})
}

// get returns a copy of the lines received on stream.
func (r *recorder) get(stream string) []line {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]line(nil), r.lines[stream]...)
}

// texts returns the text of the lines received on stream.
func (r *recorder) texts(stream string) []string {
	var out []string
	for _, l := range r.get(stream) {
		out = append(out, l.text)
	}
	return out
}

// waitFor waits until a line starting with prefix arrives on stream and
// returns the rest of it.
func (r *recorder) waitFor(t *testing.T, stream, prefix string) string {
	t.Helper()
	var found string
	eventually(t, 10*time.Second, func() bool {
		for _, l := range r.get(stream) {
			if rest, ok := strings.CutPrefix(l.text, prefix); ok {
				found = rest
				return true
			}
		}
		return false
	}, "a line starting with %q on %s", prefix, stream)
	return found
}

// waitForPID is waitFor for a line announcing a PID.
func (r *recorder) waitForPID(t *testing.T, prefix string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(r.waitFor(t, supervisor.StreamStdout, prefix)))
	if err != nil {
		t.Fatalf("bad pid line: %v", err)
	}
	return pid
}

// helperSpec returns a Spec that runs this test binary in helper mode,
// with its output going to the returned recorder.
func helperSpec(t *testing.T, mode string, args ...string) (supervisor.Spec, *recorder) {
	t.Helper()
	rec := &recorder{}
	return supervisor.Spec{
		PluginID: "test-" + mode,
		Dir:      t.TempDir(),
		Path:     testBinary(t),
		Args:     args,
		Env:      []string{helperEnv + "=" + mode, raceEnv},
		Output:   rec.output,
	}, rec
}

// testBinary returns the absolute path of this test binary.
func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// start starts spec and makes sure the process is gone when the test ends.
func start(t *testing.T, spec supervisor.Spec) *supervisor.Process {
	t.Helper()
	p, err := supervisor.Start(spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { p.Stop(context.Background(), 0) })
	return p
}

// waitExit waits for p to be done and returns its exit status.
func waitExit(t *testing.T, p *supervisor.Process, timeout time.Duration) supervisor.ExitStatus {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.Done():
		return p.Exit()
	case <-timer.C:
		t.Fatalf("process %d not done after %v", p.PID(), timeout)
		return supervisor.ExitStatus{}
	}
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gone reports whether process pid has exited: it no longer exists or is
// a zombie waiting for whichever process adopted it to reap it.
func gone(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || strings.HasPrefix(string(b[i+1:]), " Z") || strings.HasPrefix(string(b[i+1:]), " X")
}
