package server

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Start is the start of an HTTP/2 connection with prior knowledge whose first request
// has the given path and content type.
func h2Start(t *testing.T, path, contentType string) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString(http2Preface)
	fr := http2.NewFramer(&buf, nil)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteWindowUpdate(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path}, {Name: ":authority", Value: "x"}, {Name: "content-type", Value: contentType}} {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	// Split over HEADERS and CONTINUATION, as a client may.
	b := block.Bytes()
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:len(b)/2]}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteContinuation(1, true, b[len(b)/2:]); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSniffRoutesOnlyGRPCPluginStreams(t *testing.T) {
	for _, c := range []struct {
		name   string
		start  []byte
		plugin bool
	}{
		{"grpc plugin stream", h2Start(t, pluginStreamPath, "application/grpc"), true},
		{"grpc+proto plugin stream", h2Start(t, pluginStreamPath, "application/grpc+proto"), true},
		{"connect plugin stream", h2Start(t, pluginStreamPath, "application/connect+proto"), false},
		{"grpc-web plugin stream", h2Start(t, pluginStreamPath, "application/grpc-web+proto"), false},
		{"another grpc call", h2Start(t, "/nexus.plugin.v1.PluginService/ListPlugins", "application/grpc"), false},
		{"http/1", []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), false},
		{"a preface and garbage", append([]byte(http2Preface), 0xff, 0xff, 0xff, 0x01, 0x00, 0, 0, 0, 1), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go func() { _, _ = client.Write(c.start) }()
			go func() { _, _ = io.Copy(io.Discard, client) }() // the sniffer's SETTINGS frame
			_ = server.SetReadDeadline(time.Now().Add(2 * time.Second))
			seen, plugin := sniffConn(server, isGRPCPluginStream)
			if plugin != c.plugin {
				t.Fatalf("plugin = %v, want %v", plugin, c.plugin)
			}
			// Whatever was read is given back first, byte for byte.
			rc := &replayConn{Conn: server, pending: seen}
			got := make([]byte, len(seen))
			if _, err := io.ReadFull(rc, got); err != nil || !bytes.Equal(got, c.start[:len(seen)]) {
				t.Fatalf("replayed %q, want %q (%v)", got, c.start[:len(seen)], err)
			}
		})
	}
}

func TestSniffGivesUpOnASilentClient(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() { _, _ = client.Write([]byte(http2Preface[:10])) }()
	_ = server.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	start := time.Now()
	seen, plugin := sniffConn(server, isGRPCPluginStream)
	if plugin || string(seen) != http2Preface[:10] || time.Since(start) > 2*time.Second {
		t.Fatalf("seen %q plugin %v after %s", seen, plugin, time.Since(start))
	}
}

// TestAckStripperRemovesOneSettingsAck drops the client's ack of the sniffer's SETTINGS frame
// (the server the connection goes to never sent it), wherever reads split the frames.
func TestAckStripperRemovesOneSettingsAck(t *testing.T) {
	var in bytes.Buffer
	fr := http2.NewFramer(&in, nil)
	_ = fr.WriteSettings()
	_ = fr.WriteWindowUpdate(0, 100)
	_ = fr.WriteSettingsAck()
	_ = fr.WritePing(false, [8]byte{1})
	_ = fr.WriteSettingsAck() // a later ack is the real server's business
	var want bytes.Buffer
	fw := http2.NewFramer(&want, nil)
	_ = fw.WriteSettings()
	_ = fw.WriteWindowUpdate(0, 100)
	_ = fw.WritePing(false, [8]byte{1})
	_ = fw.WriteSettingsAck()
	for _, step := range []int{1, 2, 5, 9, 64} {
		a := &ackStripper{}
		var out []byte
		b := in.Bytes()
		for len(b) > 0 {
			n := min(step, len(b))
			out = a.filter(out, b[:n])
			b = b[n:]
		}
		if !bytes.Equal(out, want.Bytes()) {
			t.Fatalf("reads of %d bytes: got %x, want %x", step, out, want.Bytes())
		}
	}
}

// TestSniffQueuesWhenBusy holds every sniffing slot with clients that send nothing, then
// connects a plugin: it waits for a slot rather than going to net/http unsniffed, and gets
// one when a silent client goes; with no slot free within the listener's wait, it goes to
// net/http.
func TestSniffQueuesWhenBusy(t *testing.T) {
	for _, c := range []struct {
		name       string
		wait       time.Duration
		freeASlot  bool
		wantPlugin bool
	}{
		{"a slot frees up", time.Minute, true, true},
		{"no slot in time", 10 * time.Millisecond, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := newSniffListenerWait(ln, isGRPCPluginStream, c.wait)
			defer l.Close()
			var silent []net.Conn
			defer func() {
				for _, s := range silent {
					s.Close()
				}
			}()
			for range maxSniffing {
				s, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				silent = append(silent, s)
				if _, err := s.Write([]byte(http2Preface[:10])); err != nil {
					t.Fatal(err)
				}
			}
			for deadline := time.Now().Add(10 * time.Second); len(l.sniffing) < maxSniffing; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d silent clients being sniffed", len(l.sniffing), maxSniffing)
				}
			}
			p, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			go func() { _, _ = io.Copy(io.Discard, p) }() // the sniffer's SETTINGS frame
			if _, err := p.Write(h2Start(t, pluginStreamPath, "application/grpc")); err != nil {
				t.Fatal(err)
			}
			if c.freeASlot {
				silent[0].Close()
			}
			timeout := time.After(10 * time.Second)
			for {
				select {
				case got := <-l.plugins.conns:
					if got.RemoteAddr().String() != p.LocalAddr().String() {
						t.Fatalf("a silent client went to the plugin server")
					}
					if !c.wantPlugin {
						t.Fatal("the plugin went to the plugin server; want net/http, unsniffed")
					}
					return
				case got := <-l.conns:
					if got.RemoteAddr().String() != p.LocalAddr().String() {
						continue // the silent client that went
					}
					if c.wantPlugin {
						t.Fatal("the plugin went to net/http; want the plugin server")
					}
					return
				case <-timeout:
					t.Fatal("the plugin's connection was not routed")
				}
			}
		})
	}
}
