package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	"github.com/nexus-platform/nexus/server"
)

// TestMessageToAFullInboxIsRefused: a message to a plugin whose inbox is full is answered at
// once with PLUGIN_UNAVAILABLE naming the full inbox, on both buses (over Redis the host
// queues the publish without waiting for it, and the publish's failure is the sender's
// answer); the messages the inbox holds are still answered.
func TestMessageToAFullInboxIsRefused(t *testing.T) {
	buses(t, func(t *testing.T, tune func(*server.Config)) {
		e := startMessagingServer(t, func(c *server.Config) {
			tune(c)
			c.MaxInbox = 2
		})
		externalPlugin(e, "slow-plugin", map[string]any{"message_types": []map[string]any{{"type": "work"}}})
		externalPlugin(e, "caller-plugin", map[string]any{"permissions": []string{"messages:send"}})
		release := make(chan struct{})
		started := make(chan struct{}, 8)
		runInstance(e, "slow-plugin", "s1", plugin.Plugin{
			MessageTypes: []string{"work"},
			OnMessage: func(ctx context.Context, _ plugin.Message) (map[string]any, error) {
				started <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
				}
				return map[string]any{"done": true}, nil
			},
		}, plugin.WithConcurrency(8))
		got := make(chan *plugin.Session, 1)
		runInstance(e, "caller-plugin", "c1", plugin.Plugin{OnStart: func(_ context.Context, s *plugin.Session) error {
			got <- s
			return nil
		}})
		s := <-got
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		held := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := s.Send(ctx, "slow-plugin", "work", map[string]any{})
				held <- err
			}()
		}
		for i := range 2 { // both are in the inbox, unacknowledged, until their replies
			select {
			case <-started:
			case <-ctx.Done():
				t.Fatalf("the handler got %d of the 2 messages", i)
			}
		}
		third, cancelThird := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.Send(third, "slow-plugin", "work", map[string]any{})
		cancelThird()
		var pe *plugin.Error
		if !errors.As(err, &pe) || pe.Code != "PLUGIN_UNAVAILABLE" || !strings.Contains(pe.Message, "inbox is full") {
			t.Fatalf("a send to the full inbox: %v; want PLUGIN_UNAVAILABLE, its inbox is full", err)
		}
		close(release)
		for range 2 {
			if err := <-held; err != nil {
				t.Fatalf("a message the inbox held: %v", err)
			}
		}
	})
}
