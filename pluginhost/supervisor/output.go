package supervisor

import (
	"bufio"
	"bytes"
	"os"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// After the main process has exited and its group has been killed, the
// pipes normally reach end-of-file at once. A process that left the group
// (setsid) can still hold them open; without a cgroup to kill it, the
// output is drained until the pipe has been idle for drainIdle, and never
// longer than drainMax after the exit, then the pipe is closed.
const (
	drainIdle = time.Second
	drainMax  = 10 * time.Second
	drainPoll = 100 * time.Millisecond
)

// stream reads one output pipe of a process and delivers it line by line.
// Its run method is the only goroutine reading the pipe; supervise, which
// owns it, waits for done and closes the pipe.
type stream struct {
	name     string
	f        *os.File
	max      int
	output   func(stream, line string, truncated bool)
	watchOOM bool          // look for out-of-memory messages (stderr under RLIMIT_DATA)
	done     chan struct{} // closed when run returns

	// lastActive is the time (Unix nanoseconds) the pipe last yielded data
	// or a callback returned, and 0 while a callback runs. Written by run,
	// read by drain.
	lastActive atomic.Int64

	// linesSinceOOM counts the lines read after the last out-of-memory
	// message, or is -1 if there was none. Written by run, read after done.
	linesSinceOOM int
}

// newStream returns a stream reading f; call run to start it.
func newStream(name string, f *os.File, maxLine int, output func(string, string, bool), watchOOM bool) *stream {
	s := &stream{name: name, f: f, max: maxLine, output: output, watchOOM: watchOOM, done: make(chan struct{}), linesSinceOOM: -1}
	s.lastActive.Store(time.Now().UnixNano())
	return s
}

// run reads lines until end-of-file or until the pipe is closed, and
// delivers them. It holds at most max+1 bytes of the stream at a time.
func (s *stream) run() {
	defer close(s.done)
	// One byte more than the longest line, so that a line of exactly max
	// bytes and its newline fit.
	r := bufio.NewReaderSize(activityReader{s}, s.max+1)
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			s.deliver(cut(line, s.max), true)
			for err == bufio.ErrBufferFull {
				_, err = r.ReadSlice('\n')
			}
			if err != nil {
				return
			}
			continue
		}
		if len(line) > 0 {
			// A final line without a newline is delivered at end-of-file.
			line = bytes.TrimSuffix(line, []byte{'\n'})
			line = bytes.TrimSuffix(line, []byte{'\r'})
			// bufio's smallest buffer is 16 bytes, so a shorter limit can
			// be exceeded by a line that fits the buffer.
			s.deliver(cut(line, s.max), len(line) > s.max)
		}
		if err != nil {
			return
		}
	}
}

// deliver passes one line to the callback.
func (s *stream) deliver(line []byte, truncated bool) {
	if s.watchOOM {
		if s.linesSinceOOM >= 0 {
			s.linesSinceOOM++
		}
		if hasOOMMarker(line) {
			s.linesSinceOOM = 0
		}
	}
	if s.output == nil {
		return
	}
	s.lastActive.Store(0)
	s.output(s.name, string(line), truncated)
	s.lastActive.Store(time.Now().UnixNano())
}

// idle reports whether drain should stop waiting for the stream: no
// callback is running and the pipe has been quiet for drainIdle, or the
// process exited more than drainMax ago.
func (s *stream) idle(now, exitedAt time.Time) bool {
	last := s.lastActive.Load()
	if last == 0 {
		return false
	}
	return now.Sub(time.Unix(0, last)) >= drainIdle || now.Sub(exitedAt) >= drainMax
}

// oomMarkerRecent reports whether an out-of-memory message was among the
// last oomMarkerWindow lines. Call only after done is closed.
func (s *stream) oomMarkerRecent() bool {
	return s.linesSinceOOM >= 0 && s.linesSinceOOM <= oomMarkerWindow
}

// drain waits for every stream to reach end-of-file after the process
// exited at exitedAt, closing a pipe that stays open but idle (see
// drainIdle), and closes all pipes.
func drain(streams []*stream, exitedAt time.Time) {
	ticker := time.NewTicker(drainPoll)
	defer ticker.Stop()
	for _, s := range streams {
	wait:
		for {
			select {
			case <-s.done:
				break wait
			case now := <-ticker.C:
				if s.idle(now, exitedAt) {
					// Unblocks the pending read, which ends run.
					_ = s.f.Close()
				}
			}
		}
		_ = s.f.Close()
	}
}

// activityReader reads the stream's pipe and records when data arrives.
type activityReader struct{ s *stream }

// Read implements io.Reader.
func (r activityReader) Read(b []byte) (int, error) {
	n, err := r.s.f.Read(b)
	if n > 0 {
		r.s.lastActive.Store(time.Now().UnixNano())
	}
	return n, err
}

// cut returns line shortened to at most max bytes, without splitting a
// UTF-8 encoded character at the end.
func cut(line []byte, max int) []byte {
	if len(line) <= max {
		return line
	}
	line = line[:max]
	// Look back at most UTFMax-1 bytes for the start of the last character;
	// drop it if it is incomplete. Bytes that are not UTF-8 are kept as is.
	for i := len(line) - 1; i >= 0 && i >= len(line)-(utf8.UTFMax-1); i-- {
		if utf8.RuneStart(line[i]) {
			if !utf8.FullRune(line[i:]) {
				return line[:i]
			}
			break
		}
	}
	return line
}
