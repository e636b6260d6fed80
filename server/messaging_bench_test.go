package server_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
	"github.com/nexus-platform/nexus/server"
)

// BenchmarkMessageRoundTrip sends messages from one plugin to another through the server
// and waits for each reply, 64 in flight (NEXUS_BENCH_IN_FLIGHT sets another count: at 1,
// ns/op is the mean round trip), on the in-memory bus and over Redis (a
// redis-server of its own). The plugins run in this process on the Go SDK, so a CPU
// profile (-cpuprofile) shows the host, the bus and the SDK of both plugins together;
// nexus-bench gives the figures against the baselines (this is for profiling). Besides
// msg/s it reports the CPU time per message of this process (host and plugins) and, over
// Redis, of redis-server: on a busy machine those move less than the rate does.
func BenchmarkMessageRoundTrip(b *testing.B) {
	b.Run("memory", func(b *testing.B) { benchRoundTrip(b, func(*server.Config) {}, nil) })
	b.Run("redis", func(b *testing.B) {
		rs := redistest.Start(b, redistest.Options{})
		rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
		defer rdb.Close()
		benchRoundTrip(b, func(c *server.Config) { c.RedisURL = rs.URL() }, func() time.Duration { return redisCPU(b, rdb) })
		logCommandStats(b, rdb)
	})
}

// logCommandStats logs what Redis spent per message, command by command (INFO
// commandstats, counted from the server's start: the setup is a small part of it).
func logCommandStats(b *testing.B, rdb *redis.Client) {
	if b.N < 1000 {
		return // the setup would dominate
	}
	info, err := rdb.Info(context.Background(), "commandstats", "stats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && (k == "total_reads_processed" || k == "total_writes_processed") {
			n, _ := strconv.ParseFloat(v, 64)
			b.Logf("%-22s %5.2f per message", k, n/float64(b.N))
		}
		name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		var calls, usec float64
		for _, kv := range strings.Split(stats, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				calls, _ = strconv.ParseFloat(v, 64)
			case "usec":
				usec, _ = strconv.ParseFloat(v, 64)
			}
		}
		if per := calls / float64(b.N); per >= 0.05 {
			b.Logf("%-14s %5.2f calls, %6.2f µs per message", strings.TrimPrefix(name, "cmdstat_"), per, usec/float64(b.N))
		}
	}
}

// redisCPU is the CPU time redis-server has used (INFO cpu).
func redisCPU(b *testing.B, rdb *redis.Client) time.Duration {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// processCPU is the CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// goroutinesCreated is how many goroutines this process has started so far.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func benchRoundTrip(b *testing.B, tune func(*server.Config), backendCPU func() time.Duration) {
	e := startServerWith(b, io.Discard, slog.LevelWarn, tune)
	externalPlugin(e, "bench-echo", map[string]any{"message_types": []map[string]any{{"type": "bench.echo"}}})
	externalPlugin(e, "bench-sender", map[string]any{"permissions": []string{"messages:send"}})
	runInstance(e, "bench-echo", "e1", plugin.Plugin{
		MessageTypes: []string{"bench.echo"},
		OnMessage:    func(_ context.Context, m plugin.Message) (map[string]any, error) { return m.Data, nil },
	}, plugin.WithConcurrency(256))
	var sender *plugin.Session
	got := make(chan *plugin.Session, 1)
	runInstance(e, "bench-sender", "s1", plugin.Plugin{OnStart: func(_ context.Context, s *plugin.Session) error {
		got <- s
		return nil
	}})
	sender = <-got
	data := map[string]any{"blob": strings.Repeat("x", 256)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := sender.Send(ctx, "bench-echo", "bench.echo", data); err != nil {
		b.Fatal(err)
	}
	inFlight := 64
	if n, err := strconv.Atoi(os.Getenv("NEXUS_BENCH_IN_FLIGHT")); err == nil && n > 0 {
		inFlight = n
	}
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	b.ResetTimer()
	start, cpu0, gor0 := time.Now(), processCPU(), goroutinesCreated()
	var backend0 time.Duration
	if backendCPU != nil {
		backend0 = backendCPU()
	}
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				r, err := sender.Send(ctx, "bench-echo", "bench.echo", data)
				if err != nil || r.Status != "success" {
					b.Errorf("send: %v %+v", err, r)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
	// Each goroutine started costs its start, a wake-up and usually a thread hand-off.
	b.ReportMetric(float64(goroutinesCreated()-gor0)/float64(b.N), "goroutines/msg")
	if backendCPU != nil {
		b.ReportMetric(float64((backendCPU()-backend0).Microseconds())/float64(b.N), "redis-cpu-µs/msg")
	}
}
