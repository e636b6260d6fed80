//go:build !unix

package server

import (
	"errors"
	"net"

	"google.golang.org/grpc/mem"
)

// readyReader is not available on this platform: connections are read with a buffer of
// their own.
type readyReader struct{}

func newReadyReader(net.Conn) *readyReader { return nil }

func (*readyReader) read(int, mem.BufferPool) (*[]byte, int, error) {
	return nil, 0, errors.ErrUnsupported
}
