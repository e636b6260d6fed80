package metrics_test

import (
	"fmt"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/metrics"
)

func ExampleStore_Series() {
	now := time.Date(2024, 1, 1, 11, 0, 0, 0, time.UTC)
	store := metrics.New(metrics.WithClock(func() time.Time { return now }))

	store.ObserveRequest("analytics-plugin", "user-1", 120*time.Millisecond, false)
	store.ObserveRequest("analytics-plugin", "user-2", 130*time.Millisecond, true)
	now = now.Add(time.Minute)
	store.ObserveRequest("analytics-plugin", "user-1", 80*time.Millisecond, false)

	res, err := metrics.ParseResolution("1m")
	if err != nil {
		fmt.Println(err)
		return
	}
	series, err := store.Series("analytics-plugin", now.Add(-time.Hour), now, res,
		[]string{metrics.RequestsPerMinute, metrics.ResponseTimeMS, metrics.ErrorRate})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, name := range []string{metrics.RequestsPerMinute, metrics.ResponseTimeMS, metrics.ErrorRate} {
		for _, p := range series[name] {
			fmt.Printf("%s %s %g\n", name, p.Time.Format(time.RFC3339), p.Value)
		}
	}
	fmt.Println("unique users:", store.Summary("analytics-plugin").UniqueUsers)
	// Output:
	// requests_per_minute 2024-01-01T11:00:00Z 2
	// requests_per_minute 2024-01-01T11:01:00Z 1
	// response_time_ms 2024-01-01T11:00:00Z 125
	// response_time_ms 2024-01-01T11:01:00Z 80
	// error_rate 2024-01-01T11:00:00Z 0.5
	// error_rate 2024-01-01T11:01:00Z 0
	// unique users: 2
}
