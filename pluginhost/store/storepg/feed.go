package storepg

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// The change feed (store.Feed) is PostgreSQL's LISTEN/NOTIFY: a Write that changes a plugin
// record, revokes a token or stores a setting sends one notification per change on the store's channel just
// before it commits; PostgreSQL delivers them to every listening session once, and only if,
// the transaction commits, in commit order. Each Follow listens on a connection of its own.

var _ store.Feed = (*Store)(nil)

// Payloads of the notifications: a kind prefix and the id.
const (
	noticePlugin  = "plugin:"
	noticeToken   = "token:"
	noticeSetting = "setting:"
)

// followRetry bounds the wait before Follow connects again after losing its connection;
// followPing is how long it waits for a notification before it checks that the connection
// still answers (a dead network is otherwise noticed only by TCP keepalives, minutes later).
const followRetry = time.Second

var followPing = 15 * time.Second // a variable for the tests

// channelFor is the notification channel of the store in schema: one per schema, so that
// deployments kept apart by search_path do not hear each other. A channel name is an
// identifier of at most 63 bytes.
func channelFor(schema string) string {
	c := "nexus_changes_" + schema
	if len(c) > 63 {
		sum := sha256.Sum256([]byte(schema))
		c = "nexus_changes_" + hex.EncodeToString(sum[:12])
	}
	return c
}

// notify records a change to send when the transaction commits.
func (t *tx) notify(payload string) { t.notices = append(t.notices, payload) }

// sendNotices sends the transaction's notifications (before its commit).
func (t *tx) sendNotices(channel string) error {
	if len(t.notices) == 0 {
		return nil
	}
	_, err := t.pgTx.Exec(t.ctx, `SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n`, channel, t.notices)
	return err
}

// Follow implements store.Feed.
func (s *Store) Follow(ctx context.Context, fn func(store.Change)) {
	var failing bool
	for ctx.Err() == nil {
		listening := false
		err := s.listen(ctx, func(c store.Change) {
			if !listening && failing {
				s.log.Info("storepg: following the changes of other servers again")
			}
			listening, failing = true, false
			fn(c)
		})
		if ctx.Err() != nil {
			return
		}
		if !failing {
			s.log.Warn("storepg: following the changes of other servers failed; retrying", "err", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(followRetry):
		}
	}
}

// listen follows the channel on one connection until it fails or ctx ends.
func (s *Store) listen(ctx context.Context, fn func(store.Change)) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
		_ = conn.Close(cctx)
		cancel()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	fn(store.Change{Kind: store.ChangeAny})
	for {
		wctx, cancel := context.WithTimeout(ctx, followPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			// Quiet for a while: make sure the connection still answers.
			pctx, cancel := context.WithTimeout(ctx, followPing)
			err = conn.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
		}
		if err != nil {
			return err
		}
		switch p := n.Payload; {
		case strings.HasPrefix(p, noticePlugin):
			fn(store.Change{Kind: store.ChangePlugin, ID: strings.TrimPrefix(p, noticePlugin)})
		case strings.HasPrefix(p, noticeToken):
			fn(store.Change{Kind: store.ChangeTokenRevoked, ID: strings.TrimPrefix(p, noticeToken)})
		case strings.HasPrefix(p, noticeSetting):
			fn(store.Change{Kind: store.ChangeSetting, ID: strings.TrimPrefix(p, noticeSetting)})
		}
	}
}
