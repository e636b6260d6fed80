package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// InitArg0 is argv[0] of the init stage: a process started from this binary with it runs
// the Exec read from file descriptor 3 instead of main.
const InitArg0 = "nexus-sandbox-init"

// File descriptors of the init stage.
const (
	planFD   = 3 // the Exec, as JSON, written by the parent after it placed the child
	statusFD = 4 // why the init stage failed; closed on exec when it did not
)

// Exec is what the init stage applies before it executes the plugin.
type Exec struct {
	Path string   // absolute path of the program
	Argv []string // argv, argv[0] included
	Env  []string // the whole environment
	Dir  string   // working directory

	// UID and GID, when UID >= 0, are set (with no supplementary groups) before exec.
	UID, GID int
	// ParentPID is the host's pid: the parent-death signal is set again after the
	// credentials change (which clears it), and the init stage gives up if the host is
	// already gone by then.
	ParentPID int
	// LoopbackUp brings the loopback interface of a new network namespace up.
	LoopbackUp bool
	// NoNewPrivs sets no_new_privs (implied by Landlock and Seccomp).
	NoNewPrivs bool
	// Landlock, when not nil, restricts the filesystem (and IPC when ScopeIPC).
	Landlock *FSRules
	// Seccomp installs the deny-list filter (see denied).
	Seccomp bool
	// Rlimits are set, soft and hard, before exec.
	Rlimits []Rlimit
}

// FSRules are the Landlock rules of a plugin.
type FSRules struct {
	ReadExec  []string // directories to read and execute below
	ReadWrite []string // directories to read, write and (unless NoExecWrite) execute below
	RWFiles   []string // single files to read and write (devices such as /dev/null)
	ROFiles   []string // single files to read
	// ScopeIPC stops signals to, and abstract Unix socket connections with, processes
	// outside the plugin's Landlock domain (ABI 6).
	ScopeIPC bool
	// NoExecWrite takes execute away from ReadWrite: what the plugin can write it cannot
	// execute (nor map executable).
	NoExecWrite bool
	// ProcSelf allows reading the plugin's own /proc/<pid> (runtimes read their memory
	// maps and limits there); other processes' entries stay out of reach.
	ProcSelf bool
}

// Rlimit is one resource limit, as setrlimit(2) takes it.
type Rlimit struct {
	Resource int
	Value    uint64
}

func init() {
	if len(os.Args) > 0 {
		switch os.Args[0] {
		case InitArg0:
			runInit()
		case probeArg0:
			syscall.Exit(0)
		}
	}
}

// runInit is the init stage's main function; it never returns.
func runInit() {
	// The status pipe must not reach the plugin: a successful exec closes it.
	unix.CloseOnExec(statusFD)
	status := os.NewFile(statusFD, "status")
	fail := func(err error) {
		var errno syscall.Errno
		errors.As(err, &errno)
		_, _ = io.WriteString(status, strconv.Itoa(int(errno))+" "+err.Error())
		syscall.Exit(127)
	}
	var e Exec
	plan := os.NewFile(planFD, "plan")
	if err := json.NewDecoder(plan).Decode(&e); err != nil {
		fail(fmt.Errorf("read the sandbox plan: %w", err))
	}
	_ = plan.Close()
	// Everything below changes this thread only, and the plugin is executed from it.
	runtime.LockOSThread()
	if err := e.apply(); err != nil {
		fail(err)
	}
	err := syscall.Exec(e.Path, e.Argv, e.Env)
	fail(fmt.Errorf("exec %s: %w", e.Path, err))
}

// apply confines the calling thread as e says, in an order that keeps each step possible:
// what needs privilege (network, rlimits, the Landlock ruleset's open paths) before the
// credentials drop, and the filters last.
func (e *Exec) apply() error {
	if e.LoopbackUp {
		if err := loopbackUp(); err != nil {
			return fmt.Errorf("bring up loopback: %w", err)
		}
	}
	for _, r := range e.Rlimits {
		lim := unix.Rlimit{Cur: r.Value, Max: r.Value}
		var old unix.Rlimit
		if err := unix.Getrlimit(r.Resource, &old); err == nil && old.Max < r.Value {
			lim = unix.Rlimit{Cur: old.Max, Max: old.Max}
		}
		if err := unix.Setrlimit(r.Resource, &lim); err != nil {
			return fmt.Errorf("set rlimit %d: %w", r.Resource, err)
		}
	}
	rulesetFD, flags := -1, uint32(0)
	if e.Landlock != nil {
		fd, fl, err := e.Landlock.ruleset()
		if err != nil {
			return fmt.Errorf("landlock: %w", err)
		}
		rulesetFD, flags = fd, fl
	}
	if e.UID >= 0 {
		if err := dropIdentity(e.UID, e.GID); err != nil {
			return err
		}
	}
	if e.ParentPID > 0 {
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
			return fmt.Errorf("set parent-death signal: %w", err)
		}
		if os.Getppid() != e.ParentPID {
			return errors.New("the host exited")
		}
	}
	if e.NoNewPrivs || rulesetFD >= 0 || e.Seccomp {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	if rulesetFD >= 0 {
		_, _, errno := unix.RawSyscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(rulesetFD), uintptr(flags), 0)
		_ = unix.Close(rulesetFD)
		if errno != 0 {
			return fmt.Errorf("landlock_restrict_self: %w", errno)
		}
	}
	if e.Seccomp {
		if err := loadSeccomp(); err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
	}
	// Capabilities a user namespace's init stage kept to set up its network end here.
	_ = unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	if e.Dir != "" {
		if err := unix.Chdir(e.Dir); err != nil {
			return fmt.Errorf("chdir %s: %w", e.Dir, err)
		}
	}
	return nil
}

// dropIdentity sets the thread's groups, gid and uid, real, effective and saved. These are
// the raw per-thread system calls: the plugin is executed from this thread.
func dropIdentity(uid, gid int) error {
	if _, _, errno := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); errno != 0 {
		return fmt.Errorf("setgroups: %w", errno)
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); errno != 0 {
		return fmt.Errorf("setresgid %d: %w", gid, errno)
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); errno != 0 {
		return fmt.Errorf("setresuid %d: %w", uid, errno)
	}
	return nil
}

// ruleset builds the Landlock ruleset with the best this kernel supports; the caller
// enforces it on its own thread. It returns -1 when the kernel has no Landlock.
func (r *FSRules) ruleset() (int, uint32, error) {
	var rules []landlock.Rule
	if len(r.ReadExec) > 0 {
		rules = append(rules, landlock.RODirs(r.ReadExec...).IgnoreIfMissing())
	}
	if len(r.ReadWrite) > 0 {
		rw := landlock.RWDirs(r.ReadWrite...)
		if r.NoExecWrite {
			rw = landlock.PathAccess(landlock.V7.HandledAccessFS&^landlock.AccessFSSet(llsys.AccessFSExecute), r.ReadWrite...)
		}
		rules = append(rules, rw.WithRefer().IgnoreIfMissing())
	}
	if len(r.RWFiles) > 0 {
		rules = append(rules, landlock.RWFiles(r.RWFiles...).IgnoreIfMissing())
	}
	if len(r.ROFiles) > 0 {
		rules = append(rules, landlock.ROFiles(r.ROFiles...).IgnoreIfMissing())
	}
	if r.ProcSelf {
		// The init stage's pid is the plugin's: it executes the plugin itself.
		rules = append(rules, landlock.RODirs(fmt.Sprintf("/proc/%d", os.Getpid())))
	}
	cfg := landlock.MustConfig(landlock.V7.HandledAccessFS)
	if r.ScopeIPC {
		cfg = landlock.MustConfig(landlock.V7.HandledAccessFS, landlock.V7.Scoped)
	}
	return cfg.BestEffort().NewRulesetFD(rules...)
}

// loopbackUp sets the loopback interface of the current network namespace up.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// loadSeccomp installs the deny-list filter on the calling thread.
func loadSeccomp() error {
	insns, err := denyPolicy().Assemble()
	if err != nil {
		return err
	}
	raw := make([]unix.SockFilter, len(insns))
	for i, in := range insns {
		ri, err := in.Assemble()
		if err != nil {
			return err
		}
		raw[i] = unix.SockFilter{Code: ri.Op, Jt: ri.Jt, Jf: ri.Jf, K: ri.K}
	}
	prog := unix.SockFprog{Len: uint16(len(raw)), Filter: &raw[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return errno
	}
	return nil
}

// deniedSyscalls are refused with EPERM: no plugin needs them, and each is a way out of
// the sandbox or into the kernel's attack surface (the list follows the default profiles
// of container runtimes).
var deniedSyscalls = []string{
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
	"mount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree",
	"fsopen", "fsconfig", "fsmount", "fspick",
	"setns", "unshare",
	"bpf", "perf_event_open", "userfaultfd",
	"kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
	"init_module", "finit_module", "delete_module",
	"keyctl", "add_key", "request_key",
	"open_by_handle_at", "name_to_handle_at",
	"acct", "quotactl", "syslog", "iopl", "ioperm", "lookup_dcookie",
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"personality", "vhangup", "uselib",
}

// namespaceFlags are the clone(2) flags that create namespaces: clone with any of them is
// refused like unshare. clone3 passes its flags in memory a filter cannot read, so it is
// answered ENOSYS, and C libraries and runtimes fall back to clone.
var namespaceFlags = []uint64{
	unix.CLONE_NEWNS, unix.CLONE_NEWCGROUP, unix.CLONE_NEWUTS, unix.CLONE_NEWIPC,
	unix.CLONE_NEWUSER, unix.CLONE_NEWPID, unix.CLONE_NEWNET, unix.CLONE_NEWTIME,
}

// denyPolicy is the seccomp policy: allow by default, EPERM for deniedSyscalls and
// namespace-creating clones, ENOSYS for clone3.
func denyPolicy() *seccomp.Policy {
	clones := make([]seccomp.NameWithConditions, 0, len(namespaceFlags))
	for _, f := range namespaceFlags {
		clones = append(clones, seccomp.NameWithConditions{Name: "clone", Conditions: []seccomp.Condition{
			{Argument: 0, Operation: seccomp.BitsSet, Value: f},
		}})
	}
	return &seccomp.Policy{
		DefaultAction: seccomp.ActionAllow,
		Syscalls: []seccomp.SyscallGroup{
			{Action: seccomp.ActionErrno, Names: deniedSyscalls, NamesWithCondtions: clones},
			{Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: []string{"clone3"}},
		},
	}
}

// InitError turns what the init stage wrote to its status pipe into an error that wraps the
// system error (errno) that made it fail, if any.
func InitError(msg []byte) error {
	n, text, _ := strings.Cut(string(msg), " ")
	if errno, err := strconv.Atoi(n); err == nil && errno != 0 {
		return &initError{text: text, errno: syscall.Errno(errno)}
	}
	return errors.New(text)
}

type initError struct {
	text  string
	errno syscall.Errno
}

func (e *initError) Error() string { return e.text }
func (e *initError) Unwrap() error { return e.errno }
