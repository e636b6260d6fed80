// Command user-management is an example plugin that keeps user records in memory and
// answers `create_user` {user_id, name, email} and `get_user` {user_id} messages.
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
		MessageTypes: []string{"create_user", "get_user"},
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			id, _ := m.Data["user_id"].(string)
			if id == "" {
				return nil, errors.New(m.Type + " needs user_id")
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
