package logsink

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// parseLogLine turns one line a plugin wrote to stdout or stderr into a record. JSON objects
// give the level, message, time and metadata; other lines are INFO (stdout) or ERROR
// (stderr).
func parseLogLine(pluginID, stream, line string) store.LogRecord {
	rec := store.LogRecord{PluginID: pluginID, Time: time.Now().UTC(), Level: "INFO", Message: line}
	if stream == "stderr" {
		rec.Level = "ERROR"
	}
	trimmed := strings.TrimSpace(line)
	if !strings.HasPrefix(trimmed, "{") {
		return rec
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(trimmed), &obj); err != nil {
		return rec
	}
	level, msg := "", ""
	for _, k := range []string{"level", "lvl", "severity"} {
		if v, ok := obj[k].(string); ok {
			level = v
			delete(obj, k)
			break
		}
	}
	for _, k := range []string{"message", "msg"} {
		if v, ok := obj[k].(string); ok {
			msg = v
			delete(obj, k)
			break
		}
	}
	if level == "" && msg == "" {
		return rec
	}
	for _, k := range []string{"time", "ts", "timestamp"} {
		if v, ok := obj[k].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				rec.Time = t.UTC()
			}
			delete(obj, k)
			break
		}
	}
	if level != "" {
		rec.Level = normalizeLevel(level)
	}
	rec.Message = msg
	if len(obj) > 0 {
		if b, err := json.Marshal(obj); err == nil {
			rec.Metadata = b
		}
	}
	return rec
}

// normalizeLevel maps common level names to DEBUG, INFO, WARNING or ERROR.
func normalizeLevel(l string) string {
	switch strings.ToUpper(strings.TrimSpace(l)) {
	case "DEBUG", "TRACE":
		return "DEBUG"
	case "WARN", "WARNING":
		return "WARNING"
	case "ERROR", "ERR", "FATAL", "CRITICAL", "PANIC":
		return "ERROR"
	}
	return "INFO"
}
