package busredis

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost/bus"
)

// maxBatch bounds the calls of one pipeline.
const maxBatch = 256

// batcher runs the script calls that concurrent callers queue in pipelines, one pipeline at a
// time: the calls queued while a pipeline is out go together in the next one. Under load a
// pipeline carries many calls in one round trip, one write and one read on each side,
// instead of a round trip (and a pooled connection) each; at one call in flight it costs
// what a single call costs.
//
// Calls run in the order they were queued: a pipeline's commands run in order on one
// connection, and the next pipeline is sent only once the previous one is answered. So the
// messages a plugin instance sends in order, queued by its receive loop in that order
// without waiting for each to be stored, are stored in that order.
type batcher struct {
	rdb *redis.Client

	mu      sync.Mutex
	queue   []*batchCall
	running bool          // a runner goroutine is draining the queue
	stopped chan struct{} // set while running; closed when the runner exits
	closed  bool
}

// batchCall is one queued script call. done is called once, on the runner's goroutine, with
// the command answered (or failed); it must not block.
//
// A call with prepare set takes its keys and arguments only when its pipeline is built:
// prepare returns them (ok false: nothing to run, done is not called), so that what was
// queued for it until then goes in this one call (see ackQueue).
type batchCall struct {
	ctx     context.Context
	s       script
	keys    []string
	args    []any
	done    func(*redis.Cmd)
	prepare func() (keys []string, args []any, ok bool)
}

func newBatcher(rdb *redis.Client) *batcher { return &batcher{rdb: rdb} }

// add queues c. After close, c fails with bus.ErrClosed at once.
func (p *batcher) add(c *batchCall) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.done(failedCmd(c.ctx, bus.ErrClosed))
		return
	}
	p.queue = append(p.queue, c)
	if !p.running {
		p.running = true
		p.stopped = make(chan struct{})
		go p.run(p.stopped)
	}
	p.mu.Unlock()
}

// do runs one call through the batcher and waits for it, or for the end of ctx.
func (p *batcher) do(ctx context.Context, s script, keys []string, args ...any) *redis.Cmd {
	ch := make(chan *redis.Cmd, 1)
	p.add(&batchCall{ctx: ctx, s: s, keys: keys, args: args, done: func(c *redis.Cmd) { ch <- c }})
	select {
	case c := <-ch:
		return c
	case <-ctx.Done():
		return failedCmd(ctx, ctx.Err())
	}
}

// run sends the queue's calls in pipelines until the queue is empty.
func (p *batcher) run(stopped chan struct{}) {
	defer close(stopped)
	for {
		p.mu.Lock()
		n := min(len(p.queue), maxBatch)
		if n == 0 {
			p.running = false
			p.queue = nil // let a long queue's array go
			p.mu.Unlock()
			return
		}
		batch := make([]*batchCall, n)
		copy(batch, p.queue)
		clear(p.queue[:n])
		p.queue = p.queue[n:]
		p.mu.Unlock()
		p.exec(batch)
	}
}

// exec runs batch in one pipeline (two when Redis lost its scripts, after a restart: the
// second loads them and runs the calls that did not run) and reports each call's outcome.
// The pipeline is not bound by the callers' contexts, only by the client's timeouts: one
// caller giving up must not fail the others. A caller that gave up before the pipeline was
// sent is left out of it.
func (p *batcher) exec(batch []*batchCall) {
	ctx := context.Background()
	cmds := make([]*redis.Cmd, len(batch))
	pipe := p.rdb.Pipeline()
	for i, c := range batch {
		if c.prepare != nil {
			keys, args, ok := c.prepare()
			if !ok {
				continue
			}
			c.keys, c.args = keys, args
		}
		if err := c.ctx.Err(); err != nil {
			cmds[i] = failedCmd(c.ctx, err)
			continue
		}
		cmds[i] = c.s.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx)
	}
	var retry []int
	for i, cmd := range cmds {
		if cmd != nil && isNoScript(cmd.Err()) {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		pipe = p.rdb.Pipeline()
		loaded := map[string]bool{}
		for _, i := range retry {
			if s := batch[i].s; !loaded[s.src] {
				loaded[s.src] = true
				s.load(ctx, pipe)
			}
			cmds[i] = batch[i].s.EvalSha(ctx, pipe, batch[i].keys, batch[i].args...)
		}
		_, _ = pipe.Exec(ctx)
	}
	for i, c := range batch {
		if cmds[i] != nil {
			c.done(cmds[i])
		}
	}
}

// close fails the calls queued from now on and waits until the queued ones are done.
func (p *batcher) close() {
	p.mu.Lock()
	p.closed = true
	stopped := p.stopped
	running := p.running
	p.mu.Unlock()
	if running {
		<-stopped
	}
}

// failedCmd is a command that failed with err without being sent.
func failedCmd(ctx context.Context, err error) *redis.Cmd {
	c := redis.NewCmd(ctx)
	c.SetErr(err)
	return c
}
