package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
	"github.com/nexus-platform/nexus/pluginhost/identity"
	"github.com/nexus-platform/nexus/pluginhost/secrets"
	"github.com/nexus-platform/nexus/pluginhost/store/storepg/pgtest"
)

const (
	// readyTimeout bounds the wait for a replica to listen and answer /readyz.
	readyTimeout = 60 * time.Second
	// shutdownTimeout is the replicas' --shutdown-timeout; stopGrace bounds the wait for
	// them to exit after SIGTERM before they are killed.
	shutdownTimeout = 10 * time.Second
	stopGrace       = shutdownTimeout + 5*time.Second
	// markerFile marks a directory this program made, which it may empty.
	markerFile = ".nexus-cluster"
	// lockFile, held for the program's life, keeps a second nexus-cluster out of the
	// directory.
	lockFile = ".lock"
)

// config is what nexus-cluster runs; parseFlags validates it.
type config struct {
	nexus        string        // the nexus binary
	dir          string        // the working directory
	replicas     int           // how many replicas
	firstPort    int           // the first replica's port; 0: free ports
	leaseTTL     time.Duration // the replicas' --lease-ttl
	heartbeat    time.Duration // the replicas' --heartbeat-interval
	repositories []string      // --repository values for every replica
	// env is more environment for the replicas (tests run their own binary as nexus).
	env []string
}

// cluster is a running PostgreSQL, Redis and the replicas on them. Close stops them.
type cluster struct {
	cfg     config
	dir     string // absolute; assigned once
	token   string // the admin token; assigned once
	pg      *pgtest.Server
	dbURL   string
	redis   *redistest.Server
	lock    *os.File // flock on dir/.lock, held until Close
	replica []*replica
	stderr  io.Writer

	// closing is set by Close, so that replicas exiting then are not reported as lost.
	closing atomic.Bool
	// watchers are the goroutines reporting replicas that exit; each ends when its
	// replica's process has exited.
	watchers  sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// replica is one `nexus serve` process.
type replica struct {
	id       string
	dataDir  string
	logPath  string
	pidPath  string
	addrFile string
	listen   string
	url      string // http://host:port, assigned once it listens
	cmd      *exec.Cmd
	// exited is closed once the process has exited; waitErr is assigned before, so it may
	// be read without synchronisation after exited is closed.
	exited  chan struct{}
	waitErr error
}

// startCluster starts PostgreSQL, Redis and cfg.replicas replicas, and returns once every
// replica answers /readyz. On failure everything started is stopped. Lost replicas are
// reported on stderr.
func startCluster(ctx context.Context, cfg config, stderr io.Writer) (_ *cluster, err error) {
	dir, err := filepath.Abs(cfg.dir)
	if err != nil {
		return nil, err
	}
	c := &cluster{cfg: cfg, dir: dir, stderr: stderr}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	if err := c.prepareDir(); err != nil {
		return nil, err
	}
	if c.token, err = identity.NewSecret(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte(c.token+"\n"), 0o600); err != nil {
		return nil, err
	}

	// Redis keeps an append-only file (fsync on every write), as a deployment would.
	if c.redis, err = redistest.StartServer(redistest.Options{AOF: true, ProcessGroup: true}); err != nil {
		return nil, fmt.Errorf("start Redis: %w", err)
	}
	if c.pg, err = pgtest.StartServer(pgtest.Options{ProcessGroup: true}); err != nil {
		return nil, fmt.Errorf("start PostgreSQL: %w", err)
	}
	if c.dbURL, err = c.pg.CreateDatabase(ctx); err != nil {
		return nil, fmt.Errorf("create the database: %w", err)
	}

	// One secrets key for every replica, in place before their first start: a replica
	// cannot open a secret configuration value another one sealed with another key.
	key, err := secrets.LoadOrCreateKey(filepath.Join(dir, "a", "secret.key"))
	if err != nil {
		return nil, err
	}
	for i := range cfg.replicas {
		id := string(rune('a' + i))
		r := &replica{
			id:       id,
			dataDir:  filepath.Join(dir, id),
			logPath:  filepath.Join(dir, id+".log"),
			pidPath:  filepath.Join(dir, id+".pid"),
			addrFile: filepath.Join(dir, id+".addr"),
			listen:   "127.0.0.1:0",
		}
		if cfg.firstPort != 0 {
			r.listen = "127.0.0.1:" + strconv.Itoa(cfg.firstPort+i)
		}
		if i > 0 {
			if err := os.MkdirAll(r.dataDir, 0o700); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(r.dataDir, "secret.key"), key, 0o600); err != nil {
				return nil, err
			}
		}
		c.replica = append(c.replica, r)
	}
	// They start together: the first migrates the database under a lock, the others wait.
	for _, r := range c.replica {
		if err := c.startReplica(r); err != nil {
			return nil, err
		}
	}
	for _, r := range c.replica {
		if err := c.waitReady(ctx, r); err != nil {
			return nil, err
		}
	}
	if err := c.writeEnv(); err != nil {
		return nil, err
	}
	return c, nil
}

// prepareDir makes the working directory, takes its lock and empties it. A directory that
// holds files but not the marker is refused: it is not this program's to empty.
func (c *cluster) prepareDir() error {
	// Searchable by others: when the replicas run as root, their plugins run under uids of
	// their own and reach their packages below.
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(c.dir, markerFile)); err != nil {
			return fmt.Errorf("%s is not empty and was not made by nexus-cluster: give another -dir", c.dir)
		}
	}
	f, err := os.OpenFile(filepath.Join(c.dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("another nexus-cluster runs in %s (%w): stop it first", c.dir, err)
	}
	c.lock = f
	for _, e := range entries {
		if e.Name() == lockFile {
			continue
		}
		if err := os.RemoveAll(filepath.Join(c.dir, e.Name())); err != nil {
			return err
		}
	}
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.dir, markerFile), []byte("made by nexus-cluster; emptied at its next start\n"), 0o644)
}

// startReplica starts r's `nexus serve` and a goroutine that reports its exit.
func (c *cluster) startReplica(r *replica) error {
	args := []string{"serve",
		"--listen", r.listen,
		"--addr-file", r.addrFile,
		"--data-dir", r.dataDir,
		"--replica-id", r.id,
		// pgtest's URLs carry no password (trust authentication): ps shows nothing secret.
		"--database-url", c.dbURL,
		"--redis-url", c.redis.URL(),
		"--lease-ttl", c.cfg.leaseTTL.String(),
		"--heartbeat-interval", c.cfg.heartbeat.String(),
		"--shutdown-timeout", shutdownTimeout.String(),
	}
	for _, repo := range c.cfg.repositories {
		args = append(args, "--repository", repo)
	}
	logFile, err := os.Create(r.logPath)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own descriptor
	r.cmd = exec.Command(c.cfg.nexus, args...)
	r.cmd.Env = append(childEnv(), "NEXUS_ADMIN_TOKEN="+c.token)
	r.cmd.Env = append(r.cmd.Env, c.cfg.env...)
	r.cmd.Stdout = logFile
	r.cmd.Stderr = logFile
	// Its own process group: Ctrl-C reaches this program only, which stops the replicas
	// before the database they need for a clean stop.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startWithParentDeath(r); err != nil {
		return fmt.Errorf("start replica %s: %w", r.id, err)
	}
	if err := os.WriteFile(r.pidPath, []byte(strconv.Itoa(r.cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return err
	}
	c.watchers.Add(1)
	go func() {
		defer c.watchers.Done()
		<-r.exited
		if !c.closing.Load() {
			fmt.Fprintf(c.stderr, "nexus-cluster: replica %s (pid %d) exited: %v; its plugins start on another replica once their leases run out (%s)\n",
				r.id, r.cmd.Process.Pid, exitText(r.waitErr), c.cfg.leaseTTL)
		}
	}()
	return nil
}

// startWithParentDeath starts r.cmd from a goroutine locked to its OS thread until the
// process exits. Linux sends the parent-death signal when the thread that forked the child
// exits, and the Go runtime ends threads when it likes; a thread that lives as long as the
// child makes the signal mean "nexus-cluster died".
func startWithParentDeath(r *replica) error {
	r.exited = make(chan struct{})
	started := make(chan error, 1)
	go func() {
		defer close(r.exited)
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := r.cmd.Start(); err != nil {
			r.waitErr = err
			started <- err
			return
		}
		started <- nil
		r.waitErr = r.cmd.Wait()
	}()
	return <-started
}

// waitReady waits until r has written its address and answers /readyz.
func (c *cluster) waitReady(ctx context.Context, r *replica) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(readyTimeout)
	for {
		if addr, err := os.ReadFile(r.addrFile); err == nil && strings.HasSuffix(string(addr), "\n") {
			r.url = "http://" + strings.TrimSpace(string(addr))
			if resp, err := client.Get(r.url + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		select {
		case <-r.exited:
			return fmt.Errorf("replica %s exited: %s; the end of %s:\n%s", r.id, exitText(r.waitErr), r.logPath, tail(r.logPath, 2048))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %s not ready within %v; the end of %s:\n%s", r.id, readyTimeout, r.logPath, tail(r.logPath, 2048))
		}
	}
}

// writeEnv writes dir/env, a shell file with the addresses and the token.
func (c *cluster) writeEnv() error {
	var b strings.Builder
	b.WriteString("# Written by nexus-cluster: . " + filepath.Join(c.cfg.dir, "env") + "\n")
	for _, r := range c.replica {
		fmt.Fprintf(&b, "export NEXUS_%s=%s\n", strings.ToUpper(r.id), strings.TrimPrefix(r.url, "http://"))
	}
	// The address the README's tour, the clients and the CLI read: replica a.
	b.WriteString("export NEXUS_URL=http://$NEXUS_A\n")
	fmt.Fprintf(&b, "export TOKEN=%s\n", c.token)
	fmt.Fprintf(&b, "export NEXUS_TOKEN=%s\n", c.token)
	fmt.Fprintf(&b, "export CLUSTER_DIR=%s\n", c.dir)
	// Not NEXUS_DATABASE_URL or NEXUS_REDIS_URL: a `make run` in the same shell would take them.
	fmt.Fprintf(&b, "export CLUSTER_DATABASE_URL='%s'\n", c.dbURL)
	fmt.Fprintf(&b, "export CLUSTER_REDIS_URL='%s'\n", c.redis.URL())
	return os.WriteFile(filepath.Join(c.dir, "env"), []byte(b.String()), 0o600)
}

// printSummary tells the user where everything is and what to try.
func (c *cluster) printSummary(w io.Writer) {
	rel := func(p string) string {
		if wd, err := os.Getwd(); err == nil {
			if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
				return r
			}
		}
		return p
	}
	fmt.Fprintf(w, "\nNexus cluster: %d replicas on one PostgreSQL and one Redis (lease TTL %s, heartbeat every %s)\n\n",
		len(c.replica), c.cfg.leaseTTL, c.cfg.heartbeat)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  replica\turl\tpid\tdata directory\tlog")
	for _, r := range c.replica {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", r.id, r.url, r.cmd.Process.Pid, rel(r.dataDir), rel(r.logPath))
	}
	tw.Flush()
	fmt.Fprintf(w, "\n  PostgreSQL  %s  (pid %d, log %s)\n", c.dbURL, c.pg.Pid(), filepath.Join(c.pg.Dir(), "postgres.log"))
	fmt.Fprintf(w, "  Redis       %s  (log %s)\n", c.redis.URL(), filepath.Join(c.redis.Dir(), "redis.log"))
	fmt.Fprintf(w, "  admin token %s  (also in %s)\n\n", c.token, rel(filepath.Join(c.dir, "admin-token")))
	env := rel(filepath.Join(c.dir, "env"))
	fmt.Fprintf(w, "Try, in another terminal (the README's \"Try a cluster\" has more):\n\n")
	fmt.Fprintf(w, "  . %s   # NEXUS_A, NEXUS_B, ..., TOKEN\n", env)
	fmt.Fprintf(w, "  curl -sS \"http://$NEXUS_A/api/v1/cluster\" -H \"Authorization: Bearer $TOKEN\"\n")
	last := c.replica[len(c.replica)-1]
	fmt.Fprintf(w, "  kill -9 $(cat %s)   # kill replica %s, then list the cluster again\n\n", rel(last.pidPath), last.id)
	fmt.Fprintf(w, "Ctrl-C stops everything.\n")
}

// Close stops the replicas (SIGTERM, then SIGKILL after stopGrace), then PostgreSQL and
// Redis, and waits for every process. It is safe to call more than once.
func (c *cluster) Close() error {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		var wg sync.WaitGroup
		for _, r := range c.replica {
			if r.exited == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.stop()
			}()
		}
		wg.Wait()
		c.watchers.Wait()
		var errs []error
		if c.pg != nil {
			errs = append(errs, c.pg.Close())
		}
		if c.redis != nil {
			errs = append(errs, c.redis.Close())
		}
		if c.lock != nil {
			errs = append(errs, c.lock.Close())
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// stop asks the replica to shut down (SIGTERM) and kills it after stopGrace.
func (r *replica) stop() {
	select {
	case <-r.exited:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-r.exited:
		return
	case <-timer.C:
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
}

// childEnv is this process's environment without NEXUS_* variables: a NEXUS_DATABASE_URL or
// NEXUS_CONFIG of the user's must not change the replicas.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NEXUS_") {
			env = append(env, kv)
		}
	}
	return env
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// tail returns the last n bytes of the file at path.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
