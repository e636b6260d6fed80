// Package pgtest runs a real PostgreSQL server for tests and benchmarks: a cluster made by
// initdb in a directory of its own, listening on a free 127.0.0.1 port, killed when the
// test ends. Tests share a server and each gets a fresh database of its own on it (CREATE
// DATABASE takes milliseconds, initdb about a second). A missing PostgreSQL is a test
// failure, never a skip.
//
//	srv := pgtest.Start(t, pgtest.Options{})
//	st, err := storepg.Open(ctx, srv.NewDatabase(t))
//
// StartServer does the same outside a test (a TestMain sharing one server, a benchmark
// command); its caller owns the server and must Close it.
//
// The binaries, initdb and postgres, are looked up on PATH, then in
// /usr/lib/postgresql/<version>/bin (where Debian's postgresql package keeps them), the
// newest version first. PostgreSQL refuses to run as root: a test binary running as root
// runs initdb and postgres as an unprivileged user, PGTEST_USER when set, otherwise
// postgres when that user exists (Debian's package creates it), otherwise nobody; the
// cluster's directory belongs to that user.
//
// Databases belong to the role Role, which is not a superuser, so what passes here does not
// depend on superuser rights. PostgreSQL 13 or later is needed (DROP DATABASE ... WITH
// (FORCE)); Debian 12 ships 15. The server is tuned for tests, not durability: fsync is off,
// so a crash of the machine (not of the server) may lose committed transactions.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nexus-platform/nexus/pluginhost/internal/serverproc"
)

// Role is the role that owns the databases made by NewDatabase and CreateDatabase, and that
// their URLs log in as. It may log in and nothing more (no superuser, no CREATEDB).
const Role = "nexus"

// superuser is the bootstrap superuser initdb creates; only the harness uses it.
const superuser = "postgres"

const (
	// readyTimeout bounds the wait for a started server to accept connections (crash
	// recovery after Kill included).
	readyTimeout = 30 * time.Second
	// stopTimeout bounds the wait for a server to exit after a polite signal before it is
	// killed, and for the kill.
	stopTimeout = 10 * time.Second
	// startAttempts bounds the retries when the chosen port is taken by someone else, or the
	// previous server's processes still hold the cluster after Kill.
	startAttempts = 5
	// maxConnections is the server's max_connections: parallel tests each hold a pool.
	maxConnections = 300
)

// Options configure a server.
type Options struct {
	// Settings are more server settings, each "name=value" (e.g.
	// "log_min_duration_statement=0"), given to postgres as -c options after the harness's.
	Settings []string
	// ProcessGroup runs the server in a process group of its own, so that a signal sent to
	// the caller's group (Ctrl-C at a terminal) does not reach it and the caller stops it in
	// its own time (nexus-cluster stops its replicas first). It still dies with the caller.
	ProcessGroup bool
}

// Server is a PostgreSQL server process and its cluster directory. Its methods are safe for
// concurrent use.
type Server struct {
	opts    Options
	initdb  string              // assigned once
	binary  string              // the postgres executable; assigned once
	dir     string              // holds the cluster (data/) and the log; assigned once
	cred    *syscall.Credential // the user running the server when the test runs as root; assigned once
	userMsg string              // who runs the server, for error messages; assigned once

	// databases counts the databases made, to name them; atomic.
	databases atomic.Int64

	// mu guards the fields below and serialises Stop, Kill, Restart and Close.
	mu     sync.Mutex
	port   int
	proc   *serverproc.Process // nil before the first start
	closed bool
}

// StartServer makes a cluster in a new temporary directory and starts a server on a free
// 127.0.0.1 port, waiting until it accepts connections. The caller must Close it, which
// also removes the directory.
func StartServer(opts Options) (*Server, error) {
	initdb, binary, err := findBinaries()
	if err != nil {
		return nil, err
	}
	cred, who, err := runAs()
	if err != nil {
		return nil, err
	}
	// Not a testing TempDir: its parent directories are private to the test's user, and a
	// root test runs the server as another.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{opts: opts, initdb: initdb, binary: binary, dir: dir, cred: cred, userMsg: who}
	if err := s.create(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// Start starts a server for tb and closes it when tb ends. It fails tb when PostgreSQL is
// missing or does not start.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := StartServer(opts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return s
}

// NewDatabase creates a database of its own for tb, owned by Role, and returns its URL. The
// database is dropped when tb ends (connections still open to it are ended).
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	name, err := s.createDatabase(ctx)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if !s.Running() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		if err := s.admin(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return s.URL(name)
}

// CreateDatabase creates a new database owned by Role and returns its URL. It stays until
// the server is closed.
func (s *Server) CreateDatabase(ctx context.Context) (string, error) {
	name, err := s.createDatabase(ctx)
	if err != nil {
		return "", err
	}
	return s.URL(name), nil
}

// URL is the postgres:// URL of the database named db, logging in as Role over TCP without
// TLS.
func (s *Server) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Role),
		Host:     s.Addr(),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Addr is the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Dir is the directory holding the cluster (data/) and the server's log (postgres.log).
func (s *Server) Dir() string { return s.dir }

// Running reports whether the server process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runningLocked()
}

// Pid returns the postmaster's process id, 0 when it is not running.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runningLocked() {
		return 0
	}
	return s.proc.Pid()
}

// Stop shuts the server down (fast shutdown: sessions are ended, a checkpoint is written)
// and waits; after a bounded wait it is killed. Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(syscall.SIGINT)
}

// Kill kills the postmaster (SIGKILL) and waits for it to exit, as a crash would; its
// backends notice and exit on their own. The next start recovers from the write-ahead log.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(syscall.SIGKILL)
}

// Restart stops the server gracefully if it runs, then starts it again on the same port and
// cluster, so every committed transaction is kept. It waits until the server accepts
// connections.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pgtest: server closed")
	}
	if err := s.stopLocked(syscall.SIGINT); err != nil {
		return err
	}
	var err error
	// The port was free a moment ago, but another process may take it in between; after a
	// Kill, the old backends may hold the cluster for a moment.
	for range startAttempts {
		if err = s.launchLocked(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// Close stops the server at once (immediate shutdown: nothing is kept) and removes its
// directory. Further calls do nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.stopLocked(syscall.SIGQUIT)
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
		err = fmt.Errorf("pgtest: %w", rerr)
	}
	return err
}

// create runs initdb, starts the server on a free port and creates Role.
func (s *Server) create() error {
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: give %s to %s: %w", s.dir, s.userMsg, err)
		}
	}
	args := []string{
		"--pgdata", s.dataDir(),
		"--username", superuser,
		"--auth", "trust",
		"--encoding", "UTF8",
		"--no-locale",
		"--no-sync",
	}
	if err := s.run(s.initdb, args...); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for range startAttempts {
		if s.port, err = serverproc.FreePort(); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		if err = s.launchLocked(); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := s.adminLocked(ctx, `CREATE ROLE `+pgx.Identifier{Role}.Sanitize()+` LOGIN`); err != nil {
		_ = s.stopLocked(syscall.SIGQUIT)
		return fmt.Errorf("pgtest: create role %s: %w", Role, err)
	}
	return nil
}

// createDatabase creates a database owned by Role and returns its name.
func (s *Server) createDatabase(ctx context.Context) (string, error) {
	name := "test_" + strconv.FormatInt(s.databases.Add(1), 10)
	q := `CREATE DATABASE ` + pgx.Identifier{name}.Sanitize() + ` OWNER ` + pgx.Identifier{Role}.Sanitize()
	if err := s.admin(ctx, q); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return name, nil
}

// admin runs one statement as the superuser in the postgres database.
func (s *Server) admin(ctx context.Context, query string) error {
	s.mu.Lock()
	u := s.superuserURLLocked()
	s.mu.Unlock()
	return exec1(ctx, u, query)
}

// adminLocked is admin with s.mu held.
func (s *Server) adminLocked(ctx context.Context, query string) error {
	return exec1(ctx, s.superuserURLLocked(), query)
}

// exec1 runs one statement on a connection of its own.
func exec1(ctx context.Context, url, query string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, query)
	return err
}

func (s *Server) superuserURLLocked() string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/postgres",
		RawQuery: "sslmode=disable&connect_timeout=5",
	}
	return u.String()
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) logPath() string { return filepath.Join(s.dir, "postgres.log") }

func (s *Server) runningLocked() bool {
	return s.proc != nil && s.proc.Running()
}

// run runs a command (initdb) as the server's user to completion, its output going to the
// log.
func (s *Server) run(bin string, args ...string) error {
	logFile, err := s.openLog()
	if err != nil {
		return err
	}
	defer logFile.Close()
	if err := serverproc.Run(s.command(bin, args, logFile)); err != nil {
		return fmt.Errorf("pgtest: %s%s: %w; log tail:\n%s", filepath.Base(bin), s.userMsg, err, serverproc.Tail(s.logPath(), 2048))
	}
	return nil
}

// launchLocked starts postgres on s.port and waits until it accepts connections.
func (s *Server) launchLocked() error {
	args := []string{
		"-D", s.dataDir(),
		"-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=", // TCP only: no socket directory to own or share
		"-c", "max_connections=" + strconv.Itoa(maxConnections),
		// No fsync: a commit still reaches the operating system before it is acknowledged
		// (synchronous_commit stays on), so killing the server loses nothing committed.
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
	}
	for _, kv := range s.opts.Settings {
		args = append(args, "-c", kv)
	}
	logFile, err := s.openLog()
	if err != nil {
		return err
	}
	// serverproc.Start has the kernel kill the server if the test binary dies first.
	proc, err := serverproc.Start(s.command(s.binary, args, logFile), logFile)
	if err != nil {
		return fmt.Errorf("pgtest: start postgres%s: %w", s.userMsg, err)
	}
	s.proc = proc
	// Ready when the server answers a query (crash recovery after Kill done).
	ready := func(ctx context.Context) error { return s.adminLocked(ctx, "SELECT 1") }
	if err := proc.WaitReady(readyTimeout, ready); err != nil {
		_ = s.stopLocked(syscall.SIGQUIT)
		return fmt.Errorf("pgtest: postgres on port %d%s: %w; log tail:\n%s", s.port, s.userMsg, err, serverproc.Tail(s.logPath(), 4096))
	}
	return nil
}

// command builds a command running as the server's user in its directory. With s.cred set
// (a root test binary starts PostgreSQL as an unprivileged user: it refuses to run as root),
// the process runs under that uid and gid.
func (s *Server) command(bin string, args []string, out io.Writer) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout = out
	cmd.Stderr = out
	// Settings from the environment (PGDATA, PGPORT...) must not reach the server; the C
	// locale keeps messages and initdb's choices the same everywhere.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG")
	})
	cmd.Env = append(env, "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: s.opts.ProcessGroup}
	return cmd
}

func (s *Server) openLog() (*os.File, error) {
	f, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	return f, nil
}

// stopLocked signals the postmaster and waits for it to exit; a polite signal escalates to
// SIGKILL after stopTimeout.
func (s *Server) stopLocked(sig syscall.Signal) error {
	if !s.runningLocked() {
		return nil
	}
	if err := s.proc.Stop(sig, stopTimeout); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

// findBinaries returns the initdb and postgres executables: from PATH when both are there,
// otherwise from the newest /usr/lib/postgresql/<version>/bin holding both.
func findBinaries() (initdb, postgres string, err error) {
	i, ierr := exec.LookPath("initdb")
	p, perr := exec.LookPath("postgres")
	if ierr == nil && perr == nil {
		return i, p, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return slices.Compare(versionOf(b), versionOf(a)) }) // newest first
	for _, d := range dirs {
		i, p := filepath.Join(d, "initdb"), filepath.Join(d, "postgres")
		if isExecutable(i) && isExecutable(p) {
			return i, p, nil
		}
	}
	return "", "", errors.New("pgtest: PostgreSQL not found: initdb and postgres are neither on PATH nor in /usr/lib/postgresql/*/bin (install it with: apt-get install -y postgresql)")
}

// versionOf returns the version numbers of /usr/lib/postgresql/<version>/bin.
func versionOf(binDir string) []int {
	var out []int
	for _, f := range strings.Split(filepath.Base(filepath.Dir(binDir)), ".") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil
		}
		out = append(out, n)
	}
	return out
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// runAs returns the credentials to run PostgreSQL with and a phrase naming the user for
// messages: none when the test does not run as root.
func runAs() (*syscall.Credential, string, error) {
	if os.Geteuid() != 0 {
		return nil, "", nil
	}
	names := []string{"postgres", "nobody"}
	if n := os.Getenv("PGTEST_USER"); n != "" {
		names = []string{n}
	}
	var errs []error
	for _, name := range names {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return nil, "", fmt.Errorf("pgtest: user %s: %w", name, err)
		}
		if uid == 0 {
			return nil, "", fmt.Errorf("pgtest: user %s is root, and PostgreSQL refuses to run as root", name)
		}
		cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
		return cred, fmt.Sprintf(" (as user %s, uid %d: PostgreSQL refuses to run as root)", name, uid), nil
	}
	return nil, "", fmt.Errorf("pgtest: running as root, and PostgreSQL refuses to: no user to run it as (set PGTEST_USER): %w", errors.Join(errs...))
}
