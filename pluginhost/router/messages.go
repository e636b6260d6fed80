package router

import (
	"context"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// MessageRequest is a message from one plugin to another.
type MessageRequest struct {
	// From is the sending plugin (required: messages always come from a plugin).
	From    string
	Target  string
	Type    string
	Data    Payload
	Timeout time.Duration // 0 means DefaultMessageTimeout
}

// MessageResult is the target's reply.
type MessageResult struct {
	MessageID string
	// Status is "success" or "error" (the target's handler failed; ErrorMessage says why).
	Status       string
	Data         Payload
	ErrorMessage string
	ResponseTime time.Duration
}

// waiter is a message waiting for its reply. Whoever removes it from Router.waiters
// calls done, exactly once.
type waiter struct {
	target   string
	sent     time.Time
	deadline time.Time
	timer    *time.Timer
	done     func(MessageResult, error)
}

func (m *Router) readReplies() {
	defer m.wg.Done()
	for r := range m.bus.Replies() {
		m.onReply(r)
	}
}

// onReply hands a reply to the sender waiting for it. It never blocks (it may run on a
// replying plugin's receive loop).
func (m *Router) onReply(r bus.Reply) {
	m.settle(r.MessageID, func(w *waiter) (MessageResult, error) {
		if !time.Now().Before(w.deadline) {
			// The handler's context carries the same deadline: an answer that comes
			// only once it passed is the handler giving up, not a reply.
			return MessageResult{}, timeoutError(w)
		}
		if r.ErrorCode != "" {
			return MessageResult{}, errs.New(errs.Code(r.ErrorCode), "%s", r.ErrorMessage)
		}
		return MessageResult{MessageID: r.MessageID, Status: r.Status, Data: r.Data, ErrorMessage: r.ErrorMessage,
			ResponseTime: time.Since(w.sent)}, nil
	})
}

// settle finishes a waiting message with the outcome of result, if it still waits.
func (m *Router) settle(id string, result func(*waiter) (MessageResult, error)) *waiter {
	m.mu.Lock()
	w := m.waiters[id]
	delete(m.waiters, id)
	m.mu.Unlock()
	if w == nil {
		return nil
	}
	w.timer.Stop()
	w.done(result(w))
	return w
}

// Send checks and publishes a message; done is called once with the reply or the failure
// (a timeout, a cancellation, a publish that failed on a bus that publishes asynchronously),
// and never when Send returns an error. Messages sent one after the other by one goroutine
// are published in that order. The returned id can be
// passed to cancel.
func (m *Router) Send(ctx context.Context, req MessageRequest, done func(MessageResult, error)) (string, error) {
	from, err := m.routes.get(m.reg, req.From)
	if err != nil {
		return "", err
	}
	if !from.can("messages:send") {
		return "", errs.New(errs.PluginPermissionDenied, "plugin %s may not send messages: it lacks the permission messages:send", req.From)
	}
	to, err := m.routes.get(m.reg, req.Target)
	if err != nil {
		return "", err
	}
	if mt, ok := to.messageTypes[req.Type]; ok && mt.requiredPermission != "" && !from.can(mt.requiredPermission) {
		return "", errs.New(errs.PluginPermissionDenied, "plugin %s requires the permission %s of senders of %s messages; %s lacks it",
			req.Target, mt.requiredPermission, req.Type, req.From)
	}
	if err := m.reachable(ctx, to); err != nil {
		return "", err
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultMessageTimeout
	}
	timeout = min(timeout, MaxMessageTimeout)
	now := time.Now()
	id := "msg_" + newID()
	w := &waiter{target: req.Target, sent: now, deadline: now.Add(timeout), done: done}
	// The timer is armed once the waiter is registered (and under the same lock, so that
	// whoever settles it sees the timer): a timer that fired before could not expire it,
	// and the sender would wait for good.
	m.mu.Lock()
	m.waiters[id] = w
	w.timer = time.AfterFunc(timeout, func() { m.expire(id) })
	m.mu.Unlock()
	env := bus.Envelope{
		ID: id, Kind: bus.KindMessage, Source: req.From, Target: req.Target, Type: req.Type, Data: req.Data,
		Deadline: w.deadline, ReplyTo: m.bus.Replica(), SentAt: now,
	}
	if ap, ok := m.bus.(bus.AsyncPublisher); ok {
		// Queued in the order of the calls, without waiting for the backend's round trip: a
		// failure is the waiter's outcome (unless a timeout or Close settled it first).
		ap.PublishAsync(ctx, env, func(err error) {
			if err != nil {
				m.settle(id, func(*waiter) (MessageResult, error) { return MessageResult{}, busError(err, req.Target) })
			}
		})
		return id, nil
	}
	if err := m.bus.Publish(ctx, env); err != nil {
		m.mu.Lock()
		_, waiting := m.waiters[id]
		delete(m.waiters, id)
		m.mu.Unlock()
		if !waiting {
			// The timeout (or Close) settled it during the publish and told done: that
			// is its one outcome.
			return id, nil
		}
		w.timer.Stop()
		return "", busError(err, req.Target)
	}
	return id, nil
}

// reachable checks that a plugin is enabled and has an instance connected somewhere.
func (m *Router) reachable(ctx context.Context, to *route) error {
	if !to.enabled {
		return errs.New(errs.PluginUnavailable, "plugin %s is disabled", to.id)
	}
	if m.pres.Count(to.id) > 0 {
		return nil
	}
	live, err := m.bus.Live(ctx, to.id)
	if err != nil {
		return busError(err, to.id)
	}
	if !live {
		return errs.New(errs.PluginUnavailable, "no instance of plugin %s is connected", to.id)
	}
	return nil
}

// expire ends a message whose deadline passed: the sender gets a timeout and the target's
// handler, if it has the message, is told to stop.
func (m *Router) expire(id string) {
	w := m.settle(id, func(w *waiter) (MessageResult, error) { return MessageResult{}, timeoutError(w) })
	if w != nil {
		m.withdraw(w, id)
	}
}

func timeoutError(w *waiter) error {
	return errs.New(errs.PluginCommunicationTimeout, "plugin %s did not answer within %s", w.target, w.deadline.Sub(w.sent).Round(time.Millisecond))
}

// Cancel ends a message whose sender gave up.
func (m *Router) Cancel(id string, cause error) {
	w := m.settle(id, func(*waiter) (MessageResult, error) { return MessageResult{}, cause })
	if w != nil {
		m.withdraw(w, id)
	}
}

func (m *Router) withdraw(w *waiter, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.bus.Cancel(ctx, w.target, id, w.deadline.Add(time.Minute)); err != nil {
		m.log.Warn("could not withdraw a message", "message_id", id, "target", w.target, "error", err)
	}
}

// SendMessage sends a message from one plugin to another and waits for the reply, the
// timeout (PLUGIN_COMMUNICATION_TIMEOUT) or the end of ctx (which withdraws the message and
// cancels the target's handler).
func (m *Router) SendMessage(ctx context.Context, req MessageRequest) (MessageResult, error) {
	type outcome struct {
		res MessageResult
		err error
	}
	ch := make(chan outcome, 1)
	id, err := m.Send(ctx, req, func(res MessageResult, err error) { ch <- outcome{res, err} })
	if err != nil {
		return MessageResult{}, err
	}
	select {
	case o := <-ch:
		return o.res, o.err
	case <-ctx.Done():
		m.Cancel(id, ctx.Err())
		o := <-ch // settled by cancel, or by the reply that won the race
		return o.res, o.err
	}
}
