// Command user-management is an example plugin that keeps user records in memory and
// answers `create_user` {user_id, name, email} and `get_user` {user_id} messages;
// `login` {user_id} and `logout` {user_id, session_minutes} emit the user.login and
// user.logout events, and `user_stats` {user_id} asks analytics-plugin for the user's
// activity with a message of its own.
package main

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
)

type user struct {
	ID, Name, Email string
	Created         time.Time
}

func main() {
	var mu sync.Mutex
	users := map[string]user{}
	err := plugin.Run(context.Background(), plugin.Plugin{
		Version:      "1.0.0",
		Services:     []string{"users"},
		MessageTypes: []string{"create_user", "get_user", "login", "logout", "user_stats"},
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			id, _ := m.Data["user_id"].(string)
			if id == "" {
				return nil, errors.New(m.Type + " needs user_id")
			}
			sess := plugin.SessionFromContext(ctx)
			switch m.Type {
			case "login", "logout":
				mu.Lock()
				_, known := users[id]
				mu.Unlock()
				if !known {
					return nil, errors.New("no user " + id)
				}
				data := map[string]any{"user_id": id}
				if mins, ok := m.Data["session_minutes"].(float64); ok {
					data["session_minutes"] = mins
				}
				ev, err := sess.Emit(ctx, "user."+m.Type, data)
				if err != nil {
					return nil, err
				}
				return map[string]any{"user_id": id, "event_id": ev.ID, "notified": ev.Recipients}, nil
			case "user_stats":
				reply, err := sess.Send(ctx, "analytics-plugin", "user_stats_request", map[string]any{"user_id": id})
				if err != nil {
					return nil, err
				}
				if reply.Status != "success" {
					return nil, errors.New("analytics-plugin: " + reply.Error)
				}
				return map[string]any{"user_id": id, "stats": reply.Data}, nil
			}
			mu.Lock()
			defer mu.Unlock()
			switch m.Type {
			case "create_user":
				max := 10000.0
				if v, ok := plugin.SessionFromContext(ctx).Config()["max_users"].(float64); ok {
					max = v
				}
				if _, exists := users[id]; !exists && float64(len(users)) >= max {
					return nil, errors.New("max_users reached")
				}
				name, _ := m.Data["name"].(string)
				email, _ := m.Data["email"].(string)
				users[id] = user{ID: id, Name: name, Email: email, Created: time.Now().UTC()}
				return map[string]any{"user_id": id, "created": true}, nil
			case "get_user":
				u, ok := users[id]
				if !ok {
					return nil, errors.New("no user " + id)
				}
				return map[string]any{"user_id": u.ID, "name": u.Name, "email": u.Email, "created_at": u.Created.Format(time.RFC3339)}, nil
			}
			return nil, errors.New("unknown message type " + m.Type)
		},
		OnHealthCheck: func(ctx context.Context) []plugin.Check {
			mu.Lock()
			n := float64(len(users))
			mu.Unlock()
			return []plugin.Check{plugin.Pass("user_store").WithValue(n, 10000, "users")}
		},
	})
	if err != nil {
		os.Stderr.WriteString("user-management: " + err.Error() + "\n")
		os.Exit(1)
	}
}
