package supervisor_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/supervisor"
)

// This example starts a plugin with limits, logs its output, and stops it
// politely, killing it if it has not exited within five seconds.
func ExampleStart() {
	p, err := supervisor.Start(supervisor.Spec{
		PluginID: "auth-plugin",
		Dir:      "/var/lib/nexus/plugins/auth-plugin/1.2.0",
		Path:     "/var/lib/nexus/plugins/auth-plugin/1.2.0/bin/auth-plugin",
		Env:      []string{"NEXUS_PLUGIN_ID=auth-plugin", "NEXUS_HOST=127.0.0.1:8080", "PATH=/usr/bin:/bin"},
		Limits:   supervisor.Limits{FileHandles: 256, MemoryMB: 256, CPUPercent: 50},
		Output: func(stream, line string, truncated bool) {
			slog.Info(line, "plugin", "auth-plugin", "stream", stream, "truncated", truncated)
		},
	})
	if err != nil {
		slog.Error("plugin did not start", "err", err)
		return
	}
	slog.Info("plugin started", "pid", p.PID(), "enforced", p.Enforced())

	select {
	case <-p.Done(): // crashed or exited by itself
		slog.Warn("plugin ended", "status", p.Exit().String(), "oom", p.Exit().OOMKilled)
	case <-time.After(time.Minute):
		st := p.Stop(context.Background(), 5*time.Second)
		slog.Info("plugin stopped", "status", st.String())
	}
}
