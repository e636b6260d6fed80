package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Timeouts of a measurement.
const (
	// stallTimeout is how long a phase may overrun its duration before its round trips are
	// abandoned and the scenario fails (a stuck round trip must not hang the run).
	stallTimeout = 30 * time.Second
	// settleTimeout bounds the wait for a first successful round trip before the warm-up (the
	// host may still be routing the target's connection).
	settleTimeout = 15 * time.Second
)

// Measurement is what the client process of a scenario reports.
type Measurement struct {
	// P50us and P99us are round-trip latencies at one in flight, in microseconds, over
	// Samples round trips.
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
	Samples int     `json:"samples"`
	// Throughput is round trips per second with InFlight in flight: RoundTrips completed in
	// Seconds of wall time.
	Throughput float64 `json:"throughput_per_s"`
	RoundTrips int     `json:"round_trips"`
	Seconds    float64 `json:"seconds"`
	InFlight   int     `json:"in_flight"`
	// LoadedP50us and LoadedP99us are the round-trip latencies of the throughput phase (for
	// the REST reads, which have no 1-in-flight phase, the latencies of all their requests).
	LoadedP50us float64 `json:"loaded_p50_us"`
	LoadedP99us float64 `json:"loaded_p99_us"`
	// CPUPerRoundTripUS is the CPU time (user and system) every process of a messaging
	// scenario used during the throughput phase (the measuring one, the servers, relays and
	// plugins on the path, redis-server), per round trip, in microseconds (0 where not
	// measured). On a shared machine it moves far less than the rate does, and throughput
	// on 2 cores is about their CPU divided by it.
	CPUPerRoundTripUS float64 `json:"cpu_us_per_round_trip,omitempty"`
	// CPUByProcessUS is CPUPerRoundTripUS split by process, by the processes' names.
	CPUByProcessUS map[string]float64 `json:"cpu_us_per_round_trip_by_process,omitempty"`
	// WarmupRoundTrips is how many round trips the warm-up did (not counted above).
	WarmupRoundTrips int `json:"warmup_round_trips"`
	// Slices is how many alternating slices the measurement was cut into (REST reads only).
	Slices int `json:"slices,omitempty"`
	// ServerCPUus is the CPU time the answering server process used per request, in
	// microseconds, over the measurement (REST reads only, where /proc can be read): on a
	// shared machine it moves less than the throughput does.
	ServerCPUus float64 `json:"server_cpu_us_per_request,omitempty"`

	// The fan-out scenarios (fanout.go) only. Throughput is then deliveries per second:
	// Deliveries (the subscribers' counts summed) in Seconds of wall time, while the host
	// accepted Events events (EventsPerSecond), with InFlight Emit calls in flight, for
	// Subscribers subscribers; WarmupRoundTrips are the deliveries before the phase.
	Subscribers     int     `json:"subscribers,omitempty"`
	Deliveries      int     `json:"deliveries,omitempty"`
	Events          int     `json:"events,omitempty"`
	EventsPerSecond float64 `json:"events_per_s,omitempty"`
	// SetupSeconds is the setup's wall time: InstallSeconds installing and enabling the
	// plugins through the REST API, TokenSeconds creating their tokens, ConnectSeconds
	// until every session started and a first event reached every subscriber.
	SetupSeconds   float64 `json:"setup_s,omitempty"`
	InstallSeconds float64 `json:"install_s,omitempty"`
	TokenSeconds   float64 `json:"token_s,omitempty"`
	ConnectSeconds float64 `json:"connect_s,omitempty"`
	// HostCPUPerDeliveryUS and PluginsCPUPerDeliveryUS are the CPU time (user and system)
	// the server and the plugins' process used during the phase, per delivery, in
	// microseconds (Linux; 0 when not measured): steadier than the rate on a shared machine.
	HostCPUPerDeliveryUS    float64 `json:"host_cpu_us_per_delivery,omitempty"`
	PluginsCPUPerDeliveryUS float64 `json:"plugins_cpu_us_per_delivery,omitempty"`
	// The idle scenario's figures (idle.go): per session (or connection) of Sessions, the
	// growth of the server's live Go heap plus goroutine stacks (and each alone), and of
	// its resident memory, in KiB.
	Sessions           int     `json:"sessions,omitempty"`
	KiBPerSession      float64 `json:"kib_per_session,omitempty"`
	HeapKiBPerSession  float64 `json:"heap_kib_per_session,omitempty"`
	StackKiBPerSession float64 `json:"stack_kib_per_session,omitempty"`
	RSSKiBPerSession   float64 `json:"rss_kib_per_session,omitempty"`
}

// roundTrip does one round trip and checks its reply; an error fails the measurement.
type roundTrip func(ctx context.Context) error

// measure warms up, then measures latency (one in flight) and throughput (l.concurrency in
// flight), each for l.duration.
func measure(ctx context.Context, rt roundTrip, l loadFlags) (Measurement, error) {
	var m Measurement
	if l.warmup > 0 {
		lat, _, err := drive(ctx, rt, l.concurrency, l.warmup)
		if err != nil {
			return m, fmt.Errorf("warm-up: %w", err)
		}
		m.WarmupRoundTrips = len(lat)
	}
	lat, _, err := drive(ctx, rt, 1, l.duration)
	if err != nil {
		return m, fmt.Errorf("latency (1 in flight): %w", err)
	}
	if len(lat) == 0 {
		return m, errors.New("latency (1 in flight): no round trip completed")
	}
	m.Samples = len(lat)
	m.P50us, m.P99us = percentileUS(lat, 0.50), percentileUS(lat, 0.99)

	cpu := newScenarioCPU(l)
	defer cpu.close()
	cpu0, cpuOK := cpu.readEach(ctx)
	lat, elapsed, err := drive(ctx, rt, l.concurrency, l.duration)
	if err != nil {
		return m, fmt.Errorf("throughput (%d in flight): %w", l.concurrency, err)
	}
	if cpu1, ok := cpu.readEach(ctx); ok && cpuOK && len(lat) > 0 {
		m.CPUPerRoundTripUS, m.CPUByProcessUS = perRoundTrip(cpu0, cpu1, len(lat))
	}
	m.InFlight = l.concurrency
	m.RoundTrips = len(lat)
	m.Seconds = elapsed.Seconds()
	m.Throughput = float64(len(lat)) / elapsed.Seconds()
	if len(lat) > 0 {
		m.LoadedP50us, m.LoadedP99us = percentileUS(lat, 0.50), percentileUS(lat, 0.99)
	}
	return m, nil
}

// perRoundTrip is the CPU time the processes used between two reads (before, after),
// per round trip of n, in microseconds: in all and by process.
func perRoundTrip(before, after map[string]time.Duration, n int) (float64, map[string]float64) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(n) }
	var total time.Duration
	each := make(map[string]float64, len(after))
	for name, cpu := range after {
		total += cpu - before[name]
		each[name] = us(cpu - before[name])
	}
	return us(total), each
}

// settle retries rt until it first succeeds (the route to the target may not be ready the
// moment the client is), for at most settleTimeout. It is not part of any measurement.
func settle(ctx context.Context, rt roundTrip) error {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	var last error
	for {
		if last = rt(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no successful round trip within %v: %w", settleTimeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// drive runs n goroutines, each doing sequential round trips (at least one) until d has
// passed since the start, and returns the latency of every successful round trip and the wall time until the
// last goroutine was done. The first error stops every goroutine and is returned.
func drive(ctx context.Context, rt roundTrip, n int, d time.Duration) ([]time.Duration, time.Duration, error) {
	per, elapsed, err := driveEach(ctx, func(int) roundTrip { return rt }, n, d)
	if err != nil {
		return nil, 0, err
	}
	var all []time.Duration
	for _, lat := range per {
		all = append(all, lat...)
	}
	return all, elapsed, nil
}

// driveEach is drive with goroutine i doing rt(i)'s round trips; it returns the latencies
// of each goroutine's round trips, in their order. Every goroutine does at least one round
// trip, even one that starts after d has passed (a loaded machine may start some late).
func driveEach(ctx context.Context, rt func(i int) roundTrip, n int, d time.Duration) ([][]time.Duration, time.Duration, error) {
	ctx, cancelTimeout := context.WithTimeout(ctx, d+stallTimeout)
	defer cancelTimeout()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	per := make([][]time.Duration, n) // per[i] is written only by goroutine i, read after Wait
	capacity := 4096
	if n > 64 {
		capacity = 64 // many goroutines, each with few round trips
	}
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i := range n {
		wg.Go(func() {
			rt := rt(i)
			lat := make([]time.Duration, 0, capacity)
			for {
				t0 := time.Now()
				if len(lat) > 0 && !t0.Before(end) || ctx.Err() != nil {
					break
				}
				if err := rt(ctx); err != nil {
					cancel(err)
					break
				}
				lat = append(lat, time.Since(t0))
			}
			per[i] = lat
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return nil, 0, err
	}
	return per, elapsed, nil
}

// percentileUS is the nearest-rank percentile p (0 < p <= 1) of lat, in microseconds. It
// sorts lat.
func percentileUS(lat []time.Duration, p float64) float64 {
	slices.Sort(lat)
	i := int(math.Ceil(p*float64(len(lat)))) - 1
	i = max(0, min(i, len(lat)-1))
	return float64(lat[i]) / float64(time.Microsecond)
}

// payloadBytes is n pseudo-random bytes, the same in every process of a run.
func payloadBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// payloadText is n pseudo-random letters and digits: the host path's payload is a JSON
// string.
func payloadText(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}
