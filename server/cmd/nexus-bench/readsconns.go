package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// The 1,000-connection reads: readConnections clients, each with an http.Transport of its
// own (so a TCP connection of its own, kept alive), each with one request in flight, list
// the plugins for the phase's duration. The phase starts with every client dialling at
// once, so its first requests include the connection's setup.

const (
	// readConnections is how many connections list at once.
	readConnections = 1000
	// readConnectionsMin is the shortest phase: at one request per connection in flight, a
	// round of every connection takes seconds on a loaded server, and the percentiles need
	// several rounds.
	readConnectionsMin = 5 * time.Second
	// readConnectionsFDs is how many descriptors this process needs beyond its
	// connections (the runtime's, the pipes to the children, the other clients' connections).
	readConnectionsFDs = 256
)

// manyConnections lists path on base over n connections for d (see the file comment) and
// returns the requests per second and the latency percentiles over all the requests
// (LoadedP50us, LoadedP99us, InFlight n). The latencies of the first request of each
// connection (its dial included) are written to progress.
func manyConnections(ctx context.Context, srv *readClient, clock cpuClock, n int, d time.Duration, progress io.Writer) (Measurement, error) {
	if err := ensureFileLimit(uint64(n + readConnectionsFDs)); err != nil {
		return Measurement{}, err
	}
	clients := make([]*readClient, n)
	for i := range clients {
		clients[i] = &readClient{base: srv.base, auth: srv.auth, hc: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: stallTimeout}).DialContext,
			MaxIdleConnsPerHost: 1,
			MaxConnsPerHost:     1, // one connection: a second one would hide queueing
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		}}}
	}
	defer func() {
		for _, c := range clients {
			c.hc.CloseIdleConnections()
		}
	}()
	var per [][]time.Duration
	var elapsed time.Duration
	used, err := clock.during(func() (err error) {
		per, elapsed, err = driveEach(ctx, func(i int) roundTrip {
			return func(ctx context.Context) error { return clients[i].get(ctx, pathPlugins) }
		}, n, d)
		return err
	})
	if err != nil {
		return Measurement{}, err
	}
	var all, first []time.Duration
	for _, lat := range per {
		if len(lat) == 0 {
			return Measurement{}, fmt.Errorf("a connection completed no request in %v", d+stallTimeout)
		}
		first = append(first, lat[0])
		all = append(all, lat...)
	}
	fmt.Fprintf(progress, "nexus-bench: %s: first request of each of the %d connections (dial included): p50 %.0f µs, p99 %.0f µs, max %.0f µs\n",
		srv.base, n, percentileUS(first, 0.50), percentileUS(first, 0.99), percentileUS(first, 1))
	m := Measurement{InFlight: n, RoundTrips: len(all), Seconds: elapsed.Seconds(), Slices: 1}
	m.Throughput = float64(len(all)) / elapsed.Seconds()
	m.LoadedP50us, m.LoadedP99us = percentileUS(all, 0.50), percentileUS(all, 0.99)
	if clock != nil {
		m.ServerCPUus = float64(used) / float64(time.Microsecond) / float64(len(all))
	}
	return m, nil
}

// serverLimits describes what bounds the connections a server process accepts: its
// descriptor limit (soft/hard, from /proc/PID/limits; Go raises the soft limit to the hard
// one at start) and the kernel's accept and SYN queue lengths ("" parts when unknown).
func serverLimits(pid int) string {
	var parts []string
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
				if f := strings.Fields(rest); len(f) >= 2 {
					parts = append(parts, fmt.Sprintf("open files %s (soft) / %s (hard)", f[0], f[1]))
				}
			}
		}
	}
	for _, k := range []struct{ name, path string }{
		{"somaxconn", "/proc/sys/net/core/somaxconn"},
		{"tcp_max_syn_backlog", "/proc/sys/net/ipv4/tcp_max_syn_backlog"},
	} {
		if b, err := os.ReadFile(k.path); err == nil {
			parts = append(parts, k.name+" "+strings.TrimSpace(string(b)))
		}
	}
	if len(parts) == 0 {
		return "unknown"
	}
	return strings.Join(parts, ", ")
}

// thousands prints n with a comma between thousands: 1,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// cpuClock reads the CPU time a server process has used so far (user and system, all its
// threads).
type cpuClock func() (time.Duration, error)

// during runs f and returns the CPU time the clock's process used meanwhile (0 for a nil
// clock). f's error comes first; a clock that cannot be read is an error too.
func (c cpuClock) during(f func() error) (time.Duration, error) {
	if c == nil {
		return 0, f()
	}
	before, err := c()
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := c()
	if err != nil {
		return 0, err
	}
	return after - before, nil
}

// processCPU is the clock of process pid, from /proc/PID/stat (utime and stime, in clock
// ticks of 1/100 s: Linux's USER_HZ); nil where there is no /proc.
func processCPU(pid int) cpuClock {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	return func() (time.Duration, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		return parseStatCPU(string(b))
	}
}

// parseStatCPU reads utime + stime from a /proc/PID/stat line. The command name, in
// parentheses, may hold spaces: the fields are counted from its closing parenthesis.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc stat: %q", oneLine(stat, 80))
	}
	f := strings.Fields(stat[i+1:])
	// After the name: state(3) ppid ... utime is field 14 and stime 15 of the line, so
	// f[11] and f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc stat: %q", oneLine(stat, 80))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected /proc stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100), nil
}
