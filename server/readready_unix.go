//go:build unix

package server

import (
	"net"
	"syscall"

	"google.golang.org/grpc/mem"
)

// readyReader reads a socket only once it has data, into a buffer taken from a pool at
// that moment: a connection waiting for its peer holds no read buffer. An idle plugin
// connection would otherwise pin grpc-go's 32 KiB read buffer for its whole life.
type readyReader struct {
	rc syscall.RawConn
	// The state of the read under way, kept here (with doRead bound once) so that a read
	// allocates nothing. Only the connection's reader goroutine uses them.
	size   int
	pool   mem.BufferPool
	buf    *[]byte
	n      int
	err    error
	doRead func(fd uintptr) bool
}

// newReadyReader returns a readyReader for a TCP or Unix socket, or nil for any other
// connection.
func newReadyReader(c net.Conn) *readyReader {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	r := &readyReader{rc: rc}
	r.doRead = r.readFD
	return r
}

// read waits until the socket is readable, then reads at most size bytes into a buffer
// from pool. It returns the buffer (nil when n is 0), the bytes read and an error; 0 bytes
// with no error from the socket is io.EOF's case, reported as n == 0, err == nil.
func (r *readyReader) read(size int, pool mem.BufferPool) (*[]byte, int, error) {
	r.size, r.pool = size, pool
	err := r.rc.Read(r.doRead)
	buf, n, rerr := r.buf, r.n, r.err
	r.pool, r.buf, r.n, r.err = nil, nil, 0, nil
	if err == nil {
		err = rerr
	}
	if n <= 0 && buf != nil {
		pool.Put(buf)
		buf, n = nil, 0
	}
	return buf, n, err
}

// readFD is called by the runtime's poller: it returns false to wait until the socket is
// readable, then is called again.
func (r *readyReader) readFD(fd uintptr) bool {
	r.buf = r.pool.Get(r.size)
	for {
		n, err := syscall.Read(int(fd), *r.buf)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			r.pool.Put(r.buf)
			r.buf = nil
			return false
		}
		r.n, r.err = n, err
		return true
	}
}
