package server

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/mem"
)

// Plugin streams are the hot path of messaging, and net/http's HTTP/2 server costs several
// times what grpc-go's own transport does per frame (ARCHITECTURE §8, confirmed by
// nexus-bench). So one listener serves both: a connection whose first HTTP/2 request is a
// gRPC call of PluginHostService.Connect goes to a grpc-go server (sharing the session
// code with the Connect handler); every other connection goes to net/http as before.

// http2Preface starts every HTTP/2 connection without TLS (h2c with prior knowledge).
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Sniffing bounds: how long a new connection may take to show its first request, and how
// many bytes are read to find it.
const (
	sniffTimeout  = 5 * time.Second
	sniffMaxBytes = 64 << 10
)

// maxSniffing bounds the connections being sniffed at once (each holds at most
// sniffMaxBytes).
const maxSniffing = 256

// sniffQueueWait bounds how long a new connection waits for a sniffing slot while
// maxSniffing connections are being sniffed; then it goes to net/http unsniffed. Sniffing a
// client that sends its first request at once takes well under a millisecond, so a burst
// of plugins connecting together (1,000 in nexus-bench's idle scenario) waits a little and
// reaches the grpc-go server, instead of a fifth of them landing on net/http, which serves
// an idle plugin session with more memory (its handler's stack alone: 16 KiB against 8,
// plus a connection goroutine of 8 KiB). Clients that hold slots without sending (at most
// sniffTimeout each) delay the others by at most this much.
const sniffQueueWait = 250 * time.Millisecond

// sniffListener hands plugin-stream connections to plugins and the rest to Accept.
type sniffListener struct {
	net.Listener
	isPlugin func(path, contentType string) bool
	plugins  *chanListener

	conns chan net.Conn // sniffed non-plugin connections, for Accept
	// sniffing holds a token per connection being sniffed; a connection waits at most
	// queueWait (sniffQueueWait but in tests) for one.
	sniffing  chan struct{}
	queueWait time.Duration
	done      chan struct{}
	once      sync.Once
	wg        sync.WaitGroup
}

func newSniffListener(ln net.Listener, isPlugin func(path, contentType string) bool) *sniffListener {
	return newSniffListenerWait(ln, isPlugin, sniffQueueWait)
}

// newSniffListenerWait is newSniffListener with queueWait (the tests' choice).
func newSniffListenerWait(ln net.Listener, isPlugin func(path, contentType string) bool, queueWait time.Duration) *sniffListener {
	l := &sniffListener{
		Listener: ln, isPlugin: isPlugin,
		plugins: &chanListener{addr: ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})},
		conns:   make(chan net.Conn), done: make(chan struct{}), sniffing: make(chan struct{}, maxSniffing),
		queueWait: queueWait,
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *sniffListener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.Close()
				return
			}
			// Out of file descriptors and the like: back off and try again, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		go l.route(c)
	}
}

// route sniffs one connection and hands it on. At most maxSniffing connections are sniffed
// at a time; one that finds no slot within queueWait goes to net/http unsniffed (which
// serves plugin streams too).
func (l *sniffListener) route(c net.Conn) {
	var seen []byte
	var plugin bool
	if l.sniffSlot() {
		_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
		seen, plugin = sniffConn(c, l.isPlugin)
		_ = c.SetReadDeadline(time.Time{})
		_ = c.SetWriteDeadline(time.Time{})
		<-l.sniffing
	}
	conn := &replayConn{Conn: c, pending: seen}
	if plugin {
		conn.ready = newReadyReader(c)
	}
	if len(seen) >= len(http2Preface) && string(seen[:len(http2Preface)]) == http2Preface {
		// sniffConn sent a SETTINGS frame: the client's ack of it is not for the server.
		conn.strip = &ackStripper{}
		conn.passed = len(http2Preface)
	}
	target := l.conns
	if plugin {
		target = l.plugins.conns
	}
	select {
	case target <- conn:
	case <-l.done:
		c.Close()
	}
}

// sniffSlot takes a sniffing slot, waiting at most queueWait for one; it reports false when
// none was free in time or the listener closed.
func (l *sniffListener) sniffSlot() bool {
	select {
	case l.sniffing <- struct{}{}:
		return true
	default:
	}
	timer := time.NewTimer(l.queueWait)
	defer timer.Stop()
	select {
	case l.sniffing <- struct{}{}:
		return true
	case <-timer.C:
	case <-l.done:
	}
	return false
}

func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *sniffListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		close(l.plugins.done)
		err = l.Listener.Close()
	})
	return err
}

// chanListener is the listener of the plugin-stream connections.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { return nil } // closed with its sniffListener
func (l *chanListener) Addr() net.Addr { return l.addr }

// replayConn gives back the bytes read while sniffing before reading on, without the
// client's ack of the sniffer's SETTINGS frame when strip is set.
type replayConn struct {
	net.Conn
	pending []byte
	// passed is how many leading bytes of pending bypass strip (the preface).
	passed int
	strip  *ackStripper
	out    []byte // filtered bytes not yet returned
	// ready, when set, reads the connection for ReadOnReady.
	ready *readyReader
}

// ReadOnReady reads at most size bytes into a buffer from pool, which it takes only once
// the connection has data. grpc-go reads the connections it serves this way when they
// have this method (the interface of its internal readyreader package; it finds it on a
// bare TCP connection, not through this wrapper), and with a buffer of its own, pinned
// for the connection's life, otherwise: 32 KiB per idle plugin connection
// (BenchmarkIdlePluginStreams).
func (c *replayConn) ReadOnReady(size int, pool mem.BufferPool) (*[]byte, int, error) {
	for {
		if c.ready == nil || len(c.out) > 0 || len(c.pending) > 0 {
			// The sniffed bytes first (Read returns them without waiting).
			buf := pool.Get(size)
			n, err := c.Read(*buf)
			if n == 0 {
				pool.Put(buf)
				return nil, 0, err
			}
			return buf, n, err
		}
		buf, n, err := c.ready.read(size, pool)
		if n == 0 {
			if err == nil {
				err = io.EOF
			}
			return nil, 0, err
		}
		if c.strip == nil || c.strip.done {
			return buf, n, err
		}
		c.out = c.strip.filter(c.out, (*buf)[:n])
		pool.Put(buf)
		if err != nil && len(c.out) == 0 {
			return nil, 0, err
		}
	}
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.strip == nil || c.strip.done {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			if len(c.out) == 0 {
				c.out = nil // let the bytes go
			}
			return n, nil
		}
		if len(c.pending) > 0 {
			n := copy(p, c.pending)
			c.pending = c.pending[n:]
			if len(c.pending) == 0 {
				c.pending = nil
			}
			return n, nil
		}
		return c.Conn.Read(p)
	}
	for len(c.out) == 0 {
		if c.passed > 0 {
			n := copy(p, c.pending[:c.passed])
			c.pending = c.pending[n:]
			c.passed -= n
			return n, nil
		}
		var raw []byte
		if len(c.pending) > 0 {
			raw, c.pending = c.pending, nil
		} else {
			buf := make([]byte, len(p))
			n, err := c.Conn.Read(buf)
			if n == 0 {
				return 0, err
			}
			raw = buf[:n]
		}
		c.out = c.strip.filter(c.out, raw)
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	if len(c.out) == 0 {
		c.out = nil
	}
	return n, nil
}

// ackStripper removes the first SETTINGS ack from a client's frames.
type ackStripper struct {
	hdr  [9]byte
	hn   int
	rem  int // payload bytes of the current frame still to pass
	done bool
}

// filter appends to out the bytes of in that are not the ack.
func (a *ackStripper) filter(out, in []byte) []byte {
	for len(in) > 0 {
		if a.done {
			return append(out, in...)
		}
		if a.rem > 0 {
			n := min(a.rem, len(in))
			out = append(out, in[:n]...)
			a.rem -= n
			in = in[n:]
			continue
		}
		n := copy(a.hdr[a.hn:], in)
		a.hn += n
		in = in[n:]
		if a.hn < 9 {
			continue
		}
		a.hn = 0
		length := int(a.hdr[0])<<16 | int(a.hdr[1])<<8 | int(a.hdr[2])
		if a.hdr[3] == 0x4 && a.hdr[4]&0x1 != 0 && length == 0 {
			a.done = true
			continue
		}
		out = append(out, a.hdr[:]...)
		a.rem = length
	}
	return out
}

// sniffConn reads the start of a connection: when it is HTTP/2 with prior knowledge, up to
// its first request's headers. It returns what it read and whether isPlugin accepts the
// request's path and content type. Anything else (HTTP/1, a malformed or slow start) is
// left to net/http, which answers it as it always did.
func sniffConn(c net.Conn, isPlugin func(path, contentType string) bool) ([]byte, bool) {
	var buf bytes.Buffer
	one := make([]byte, 1)
	for i := 0; i < len(http2Preface); i++ {
		if _, err := c.Read(one); err != nil {
			return buf.Bytes(), false
		}
		buf.WriteByte(one[0])
		if one[0] != http2Preface[i] {
			return buf.Bytes(), false
		}
	}
	// An empty SETTINGS frame, as the server's preface: grpc-go's client waits for one
	// before it sends its first request. The server the connection goes to sends its own.
	_ = c.SetWriteDeadline(time.Now().Add(sniffTimeout))
	if _, err := c.Write([]byte{0, 0, 0, 0x4, 0, 0, 0, 0, 0}); err != nil {
		return buf.Bytes(), false
	}
	var block []byte
	for buf.Len() < sniffMaxBytes {
		var hdr [9]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return buf.Bytes(), false
		}
		buf.Write(hdr[:])
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		typ, flags := hdr[3], hdr[4]
		if buf.Len()+length > sniffMaxBytes {
			return buf.Bytes(), false
		}
		// Read as it arrives: a frame header claiming a large payload allocates nothing.
		start := buf.Len()
		if _, err := io.CopyN(&buf, c, int64(length)); err != nil {
			return buf.Bytes(), false
		}
		payload := buf.Bytes()[start:]
		switch typ {
		case 0x1: // HEADERS
			if flags&0x8 != 0 { // PADDED
				if len(payload) < 1 || int(payload[0]) >= len(payload) {
					return buf.Bytes(), false
				}
				payload = payload[1 : len(payload)-int(payload[0])]
			}
			if flags&0x20 != 0 { // PRIORITY
				if len(payload) < 5 {
					return buf.Bytes(), false
				}
				payload = payload[5:]
			}
			block = append(block, payload...)
			if flags&0x4 != 0 { // END_HEADERS
				return buf.Bytes(), matchHeaders(block, isPlugin)
			}
		case 0x9: // CONTINUATION
			if block == nil {
				return buf.Bytes(), false
			}
			block = append(block, payload...)
			if flags&0x4 != 0 {
				return buf.Bytes(), matchHeaders(block, isPlugin)
			}
		default: // SETTINGS, WINDOW_UPDATE, PING, PRIORITY come before the first request
			if block != nil {
				return buf.Bytes(), false
			}
		}
	}
	return buf.Bytes(), false
}

func matchHeaders(block []byte, isPlugin func(path, contentType string) bool) bool {
	var path, ct string
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		switch f.Name {
		case ":path":
			path = f.Value
		case "content-type":
			ct = f.Value
		}
	})
	dec.SetMaxStringLength(8 << 10)
	if _, err := dec.Write(block); err != nil {
		return false
	}
	if err := dec.Close(); err != nil {
		return false
	}
	return isPlugin(path, ct)
}

// isGRPCPluginStream says whether a request is a gRPC call of the plugin stream.
func isGRPCPluginStream(path, contentType string) bool {
	return path == pluginStreamPath && (contentType == "application/grpc" || strings.HasPrefix(contentType, "application/grpc+proto") ||
		strings.HasPrefix(contentType, "application/grpc;"))
}
