package busredis_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nexus-platform/nexus/pluginhost/bus"
	"github.com/nexus-platform/nexus/pluginhost/bus/busredis"
)

// dropProxy forwards TCP to Redis; while drop is set, the first reply Redis sends on a
// connection is not forwarded: the client's connection is closed instead (a reply lost to
// a reset connection, after Redis ran the commands).
type dropProxy struct {
	ln   net.Listener
	to   string
	drop atomic.Bool
	wg   sync.WaitGroup
}

func (p *dropProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.to)
		if err != nil {
			c.Close()
			continue
		}
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(s, c); s.Close() }()
		go func() {
			defer p.wg.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 {
					if p.drop.CompareAndSwap(true, false) {
						c.Close()
						return
					}
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					c.Close()
					return
				}
			}
		}()
	}
}

// A frame whose answer is lost (the connection drops after Redis ran the XADD) is not sent
// again: a retry would append it twice, and relay frames are not idempotent.
func TestSendFrameIsNotRepeated(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, to: shared.Addr()}
	go p.serve()
	defer ln.Close()
	prefix := newPrefix()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := busredis.New(ctx, busredis.Config{URL: "redis://" + ln.Addr().String(), Prefix: prefix, Options: bus.Options{}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	time.Sleep(200 * time.Millisecond) // let the background loops open their connections
	p.drop.Store(true)
	// It fails (the answer never came) rather than being repeated.
	_ = b.SendFrame(ctx, "ghost", []byte("body chunk 7"))
	rdb := redis.NewClient(&redis.Options{Addr: shared.Addr()})
	defer rdb.Close()
	n, err := rdb.XLen(ctx, prefix+"relay:ghost").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n > 1 {
		t.Errorf("one frame sent, %d delivered", n)
	}
}
