package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// Baseline A: a raw grpc-go relay. Three processes: the client (measuring) holds one bidi
// stream to the relay, the relay one bidi stream to the echo. A frame is an 8-byte
// big-endian id followed by the payload; the relay swaps the client's id for its own on the
// way up and back on the way down, so any number of clients (and round trips) share the one
// upstream stream.

// exchange is a hand-written gRPC service of one bidi stream, "Exchange", with the codec
// both of its sides use: baseline A's raw frames, or reference C's protocol frames.
type exchange struct {
	service string
	codec   encoding.CodecV2
}

// rawExchange is baseline A's service.
var rawExchange = exchange{service: "nexusbench.Relay", codec: rawCodec{}}

// exchangeStream describes the bidi stream on both sides.
var exchangeStream = grpc.StreamDesc{StreamName: "Exchange", ServerStreams: true, ClientStreams: true}

func (x exchange) method() string { return "/" + x.service + "/" + exchangeStream.StreamName }

// serve serves h on a free loopback port, reports the address on out, and serves until ctx
// ends.
func (x exchange) serve(ctx context.Context, h grpc.StreamHandler, out io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sd := exchangeStream
	sd.Handler = h
	srv := grpc.NewServer(grpc.ForceServerCodecV2(x.codec))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: x.service,
		HandlerType: (*any)(nil),
		Streams:     []grpc.StreamDesc{sd},
		Metadata:    "nexus-bench (no proto file)",
	}, struct{}{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := writeJSON(out, ready{Addr: ln.Addr().String()}); err != nil {
		srv.Stop()
		return err
	}
	select {
	case <-ctx.Done():
		srv.Stop() // a benchmark peer: no graceful drain needed
		<-served
		return nil
	case err := <-served:
		return err
	}
}

// open dials addr and opens the one bidi stream.
func (x exchange) open(ctx context.Context, addr string) (*grpc.ClientConn, grpc.ClientStream, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	cs, err := conn.NewStream(ctx, &exchangeStream, x.method(), grpc.ForceCodecV2(x.codec))
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, cs, nil
}

// roundTripper is the measuring client of a relay: round trips over one stream, and the
// goroutine that receives their replies until the stream ends (then dead is closed).
type roundTripper interface {
	roundTrip(ctx context.Context) error
	receive()
	deadCh() <-chan struct{}
}

// clientMain is the measuring client process of a relay (role): it opens the stream to the
// relay at -addr, makes round trips with the client newClient returns, and reports them.
func clientMain(ctx context.Context, args []string, out io.Writer, role string, x exchange,
	newClient func(cs grpc.ClientStream, payload int) (roundTripper, error)) error {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	addr := fs.String("addr", "", "the relay's address")
	var l loadFlags
	l.register(fs)
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, cs, err := x.open(streamCtx, *addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	c, err := newClient(cs, l.payload)
	if err != nil {
		return err
	}
	go c.receive()
	defer func() {
		cancel()
		<-c.deadCh()
	}()
	if err := settle(ctx, c.roundTrip); err != nil {
		return err
	}
	m, err := measure(ctx, c.roundTrip, l)
	if err != nil {
		return err
	}
	return writeJSON(out, m)
}

// runChain runs a relay scenario: the echo (roles[0]), the relay in front of it (roles[1]),
// then the measuring client (roles[2]), whose measurement it returns.
func (b *bench) runChain(ctx context.Context, roles [3]string) (Measurement, error) {
	ps := newProcs(b.stderr)
	defer ps.stopAll()
	var echoAddr, relayAddr ready
	echo, err := ps.start(roles[0], b.selfCmd(roles[0]), stopGrace)
	if err != nil {
		return Measurement{}, err
	}
	if err := echo.readJSON(ctx, readyTimeout, &echoAddr); err != nil {
		return Measurement{}, err
	}
	rl, err := ps.start(roles[1], b.selfCmd(roles[1], "-upstream", echoAddr.Addr), stopGrace)
	if err != nil {
		return Measurement{}, err
	}
	if err := rl.readJSON(ctx, readyTimeout, &relayAddr); err != nil {
		return Measurement{}, err
	}
	args := append(append([]string{"-addr", relayAddr.Addr}, b.loadArgs()...), cpuArgs(roles[2], "", echo, rl)...)
	client, err := ps.start(roles[2], b.selfCmd(roles[2], args...), stopGrace)
	if err != nil {
		return Measurement{}, err
	}
	var m Measurement
	if err := client.readJSON(ctx, b.measureTimeout(), &m); err != nil {
		return Measurement{}, err
	}
	return m, nil
}

// frame is a message on the relay's streams: id (8 bytes) then payload.
type frame struct{ b []byte }

func (f *frame) id() uint64      { return binary.BigEndian.Uint64(f.b) }
func (f *frame) setID(id uint64) { binary.BigEndian.PutUint64(f.b, id) }

// rawCodec puts a frame's bytes on the wire as they are. Unmarshal copies out of gRPC's
// buffers once (as every codec does), so a received frame may be kept and forwarded.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(f.b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	f.b = data.Materialize()
	if len(f.b) < 8 {
		return fmt.Errorf("rawCodec: frame of %d bytes has no id", len(f.b))
	}
	return nil
}

func (rawCodec) Name() string { return "nexus-bench-raw" }

// relayEchoMain is the echo process: every frame received is sent back as it is, on the
// stream's handler goroutine.
func relayEchoMain(ctx context.Context, args []string, out io.Writer) error {
	if err := parseChildFlags(flag.NewFlagSet(roleRelayEcho, flag.ContinueOnError), args); err != nil {
		return err
	}
	return rawExchange.serve(ctx, func(_ any, ss grpc.ServerStream) error {
		for {
			var f frame
			if err := ss.RecvMsg(&f); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if err := ss.SendMsg(&f); err != nil {
				return err
			}
		}
	}, out)
}

// relay forwards the frames of its clients' streams over one upstream stream and routes the
// replies back by id.
type relay struct {
	up grpc.ClientStream

	sendMu sync.Mutex // serialises up.SendMsg (one sender at a time on a gRPC stream)

	mu     sync.Mutex // guards next and routes
	next   uint64
	routes map[uint64]route
}

// route is where a reply goes back to: the client's stream and the client's id.
type route struct {
	down grpc.ServerStream
	id   uint64
}

// serveClient is the handler of one client stream: it forwards every frame upstream.
func (r *relay) serveClient(_ any, down grpc.ServerStream) error {
	for {
		var f frame
		if err := down.RecvMsg(&f); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		r.mu.Lock()
		r.next++
		id := r.next
		r.routes[id] = route{down: down, id: f.id()}
		r.mu.Unlock()
		f.setID(id)
		r.sendMu.Lock()
		err := r.up.SendMsg(&f)
		r.sendMu.Unlock()
		if err != nil {
			return fmt.Errorf("forward upstream: %w", err)
		}
	}
}

// routeReplies receives the upstream replies and sends each back down the stream it came
// from. It is the only goroutine that sends on client streams, so those sends need no lock.
func (r *relay) routeReplies() error {
	for {
		var f frame
		if err := r.up.RecvMsg(&f); err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
		r.mu.Lock()
		rt, ok := r.routes[f.id()]
		delete(r.routes, f.id())
		r.mu.Unlock()
		if !ok {
			return fmt.Errorf("upstream replied to unknown id %d", f.id())
		}
		f.setID(rt.id)
		// A client that went away cannot take its reply; the others are unaffected.
		_ = rt.down.SendMsg(&f)
	}
}

// relayMain is the relay process of baseline A.
func relayMain(ctx context.Context, args []string, out io.Writer) error {
	return middleMain(ctx, args, out, roleRelay, rawExchange, func(up grpc.ClientStream) relayer {
		return &relay{up: up, routes: make(map[uint64]route)}
	})
}

// relayer is the middle process of a relay: it serves the clients' streams and routes the
// replies that come back on its one upstream stream.
type relayer interface {
	serveClient(_ any, down grpc.ServerStream) error
	routeReplies() error
}

// middleMain is the relay process of a scenario (role): it opens the one upstream stream to
// the echo at -upstream, then serves clients with the relayer newRelay returns for it.
func middleMain(ctx context.Context, args []string, out io.Writer, role string, x exchange,
	newRelay func(up grpc.ClientStream) relayer) error {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	upstream := fs.String("upstream", "", "the echo's address")
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	conn, up, err := x.open(ctx, *upstream)
	if err != nil {
		return err
	}
	defer conn.Close()
	r := newRelay(up)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		err := r.routeReplies()
		if parent.Err() != nil {
			// The run is ending: the echo may stop before this relay sees its own context
			// end (a parent's Done closes before its children are cancelled), and the
			// upstream error that follows is not a failure.
			err = nil
		}
		cancel(err)
	})
	err = x.serve(ctx, r.serveClient, out)
	if cause := context.Cause(ctx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	cancel(nil)
	return err
}

// relayClient does round trips over one stream to the relay, many in flight at once.
type relayClient struct {
	*waiters[uint64, []byte]
	cs      grpc.ClientStream
	payload []byte

	sendMu sync.Mutex // serialises cs.SendMsg
}

// roundTrip sends one frame and waits for the echo of it.
func (c *relayClient) roundTrip(ctx context.Context) error {
	id, reply, err := c.call(ctx, func(n uint64) uint64 { return n }, func(id uint64) error {
		f := frame{b: make([]byte, 8+len(c.payload))}
		f.setID(id)
		copy(f.b[8:], c.payload)
		c.sendMu.Lock()
		defer c.sendMu.Unlock()
		if err := c.cs.SendMsg(&f); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !bytes.Equal(reply[8:], c.payload) {
		return fmt.Errorf("reply %d does not carry the payload back", id)
	}
	return nil
}

// receive delivers replies to their waiting round trips until the stream ends.
func (c *relayClient) receive() {
	for {
		var f frame
		if err := c.cs.RecvMsg(&f); err != nil {
			c.stop(err)
			return
		}
		if !c.resolve(f.id(), f.b) {
			c.stop(fmt.Errorf("reply to unknown id %d", f.id()))
			return
		}
	}
}

// relayClientMain is the measuring client of baseline A.
func relayClientMain(ctx context.Context, args []string, out io.Writer) error {
	return clientMain(ctx, args, out, roleRelayClient, rawExchange, func(cs grpc.ClientStream, payload int) (roundTripper, error) {
		return &relayClient{waiters: newWaiters[uint64, []byte](), cs: cs, payload: payloadBytes(payload)}, nil
	})
}

// runRelay runs baseline A: echo, relay, then the measuring client.
func (b *bench) runRelay(ctx context.Context) (Measurement, error) {
	return b.runChain(ctx, [3]string{roleRelayEcho, roleRelay, roleRelayClient})
}
