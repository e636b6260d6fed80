package busredis

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// blockConn is a connection of its own for one reader's blocking reads, so that another
// goroutine can end a read at once with CLIENT UNBLOCK (Close, or a consumer told to look
// for handed-back entries). The reader alone calls get and reset; unblock is safe from any
// goroutine.
type blockConn struct {
	rdb *redis.Client

	mu   sync.Mutex // guards conn and id
	conn *redis.Conn
	id   int64 // Redis client id of conn, 0 without conn
}

// get returns the connection, opening it (and learning its client id) when needed.
func (bc *blockConn) get(ctx context.Context) (*redis.Conn, error) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if bc.conn != nil {
		return bc.conn, nil
	}
	conn := bc.rdb.Conn()
	id, err := conn.ClientID(ctx).Result()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	bc.conn, bc.id = conn, id
	return conn, nil
}

// reset drops the connection after an error: the next get opens a new one.
func (bc *blockConn) reset() {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if bc.conn != nil {
		_ = bc.conn.Close()
		bc.conn, bc.id = nil, 0
	}
}

// unblock ends the blocking read in progress on the connection, if any, as if it timed out.
func (bc *blockConn) unblock() {
	bc.mu.Lock()
	id := bc.id
	bc.mu.Unlock()
	if id == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = bc.rdb.ClientUnblock(ctx, id).Err()
}

// interrupt unblocks bc until done is closed, for at most limit.
func interrupt(bc *blockConn, done <-chan struct{}, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		bc.unblock()
		select {
		case <-done:
			return true
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
}

// isConnErr reports whether err broke the connection (as opposed to a timeout of a
// blocking read, redis.Nil, or an error answer).
func isConnErr(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return false
	}
	var rerr redis.Error
	return !errors.As(err, &rerr)
}

// backoff spaces the retries of a background loop that lost Redis: 50ms doubling to 1s.
type backoff struct {
	next   time.Duration
	failed bool // the loop is in an outage (logged once)
}

// wait sleeps before the next retry; it reports false when stop fires first.
func (bo *backoff) wait(stop <-chan struct{}) bool {
	bo.next = min(max(2*bo.next, 50*time.Millisecond), time.Second)
	t := time.NewTimer(bo.next)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// fail records a failure; it reports whether this failure starts an outage (to log).
func (bo *backoff) fail() bool {
	first := !bo.failed
	bo.failed = true
	return first
}

// ok records a success; it reports whether this success ends an outage (to log).
func (bo *backoff) ok() bool {
	was := bo.failed
	bo.failed, bo.next = false, 0
	return was
}

// replyLoop reads this replica's reply stream into Replies.
func (b *Bus) replyLoop() {
	defer b.wg.Done()
	defer close(b.replyDone)
	key := b.keys.reply(b.replica)
	b.readLoop("reply", b.replyConn, key, b.replyLastID, func(m redis.XMessage) bool {
		rep, err := decodeReply([]byte(stringField(m.Values, "r")))
		if err != nil {
			b.log.Warn("busredis: undecodable reply", "id", m.ID)
			return true
		}
		if fn := b.dispatch.Load(); fn != nil {
			(*fn)(rep)
			return true
		}
		select {
		case b.replies <- rep:
			return true
		case <-b.ctx.Done():
			return false
		}
	})
}

// noticeLoop reads the notices stream: events go to the watchers, cancellations and
// hand-backs to this replica's consumers.
func (b *Bus) noticeLoop() {
	defer b.wg.Done()
	defer close(b.noticeDone)
	b.readLoop("notice", b.noticeConn, b.keys.notices(), b.noticeLastID, func(m redis.XMessage) bool {
		n, err := decodeNotice([]byte(stringField(m.Values, "n")))
		if err != nil {
			b.log.Warn("busredis: undecodable notice", "id", m.ID)
			return true
		}
		switch n.Kind {
		case bus.NoticeEvent:
			b.watchers.Send(n.Envelope)
		case bus.NoticeCancel:
			if n.Source != b.replica { // this replica applied its own at once
				b.applyCancel(n.Target, n.ID, n.Deadline, time.Now())
			}
		case noticeHandback:
			if n.Source != b.replica { // this replica woke its own at once
				b.wakeConsumers(n.Target, nil)
			}
		}
		return true
	})
}

// readLoop reads stream from after last with XREAD BLOCK until the bus closes, handing each
// entry to handle (which returns false to stop). It survives Redis going away: it retries
// with backoff on a fresh connection, from the last entry it handled.
func (b *Bus) readLoop(what string, bc *blockConn, stream, last string, handle func(redis.XMessage) bool) {
	b.readLoopBatch(what, bc, stream, last, handle, func() {})
}

// readLoopBatch is readLoop calling batchDone after each batch of entries it handled.
func (b *Bus) readLoopBatch(what string, bc *blockConn, stream, last string, handle func(redis.XMessage) bool, batchDone func()) {
	defer bc.reset()
	var bo backoff
	for b.ctx.Err() == nil {
		conn, err := bc.get(b.ctx)
		var res []redis.XStream
		if err == nil {
			res, err = conn.XRead(b.ctx, &redis.XReadArgs{Streams: []string{stream, last}, Count: 256, Block: readerBlock}).Result()
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			if b.ctx.Err() != nil {
				return
			}
			if bo.fail() {
				b.log.Warn("busredis: "+what+" reader lost redis; retrying", "err", err)
			}
			if isConnErr(err) {
				bc.reset()
			}
			if !bo.wait(b.ctx.Done()) {
				return
			}
			continue
		}
		if bo.ok() {
			b.log.Info("busredis: " + what + " reader reconnected")
		}
		for _, s := range res {
			for _, m := range s.Messages {
				last = m.ID
				if !handle(m) {
					return
				}
			}
		}
		batchDone()
	}
}

// Watch returns the events announced from now on, on any replica. The channel is closed
// when ctx ends, when the bus closes, or when the watcher falls WatchBuffer events behind.
func (b *Bus) Watch(ctx context.Context) <-chan bus.Envelope { return b.watchers.Watch(ctx) }
