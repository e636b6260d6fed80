package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protojson"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
)

// The reads baseline (the issue's "bare connect-go + vanguard handler serving the same
// response"): a process of its own, as `nexus serve` is, that serves PluginService's
// ListPlugins and GetPlugin from prebuilt messages, the answers `nexus serve` gave to the
// same calls, through the generated handler and vanguard configured as the server
// configures them (proto as the handler's codec, protojson with proto names and unpopulated
// fields for REST), on an http.Server speaking HTTP/1.1 and h2c as the server's does. REST
// answers are wrapped in the same envelope, written the cheapest way (the transcoder's JSON
// between a prefix and a suffix). There is no Nexus work: no authentication, interceptors,
// validation, request logging, metrics or domain views.

// readResponses are the prebuilt answers: the list, and each plugin's detail by id.
type readResponses struct {
	list    *pluginv1.ListPluginsResponse
	details map[string]*pluginv1.GetPluginResponse
}

// writeReadResponses writes the list then every detail, length-delimited, to path.
func writeReadResponses(path string, r readResponses) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	_, err = protodelim.MarshalTo(w, r.list)
	for _, p := range r.list.GetPlugins() {
		if err != nil {
			break
		}
		d, ok := r.details[p.GetId()]
		if !ok {
			err = fmt.Errorf("no detail of %s", p.GetId())
			break
		}
		_, err = protodelim.MarshalTo(w, d)
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// loadReadResponses reads what writeReadResponses wrote: a list, then one detail for each
// plugin listed.
func loadReadResponses(path string) (readResponses, error) {
	f, err := os.Open(path)
	if err != nil {
		return readResponses{}, err
	}
	defer f.Close()
	rd := bufio.NewReader(f)
	r := readResponses{list: &pluginv1.ListPluginsResponse{}, details: map[string]*pluginv1.GetPluginResponse{}}
	if err := protodelim.UnmarshalFrom(rd, r.list); err != nil {
		return r, fmt.Errorf("%s: the list: %w", path, err)
	}
	for range r.list.GetPlugins() {
		d := &pluginv1.GetPluginResponse{}
		if err := protodelim.UnmarshalFrom(rd, d); err != nil {
			return r, fmt.Errorf("%s: a detail: %w", path, err)
		}
		r.details[d.GetPlugin().GetId()] = d
	}
	if len(r.details) != len(r.list.GetPlugins()) {
		return r, fmt.Errorf("%s: %d details for %d plugins", path, len(r.details), len(r.list.GetPlugins()))
	}
	if _, err := rd.ReadByte(); !errors.Is(err, io.EOF) {
		return r, fmt.Errorf("%s: more than a list and its details", path)
	}
	return r, nil
}

// baseService answers ListPlugins and GetPlugin from the prebuilt messages; it does
// nothing else (every other method is unimplemented).
type baseService struct {
	pluginv1connect.UnimplementedPluginServiceHandler
	r readResponses // read-only once serving
}

func (s *baseService) ListPlugins(context.Context, *connect.Request[pluginv1.ListPluginsRequest]) (*connect.Response[pluginv1.ListPluginsResponse], error) {
	return connect.NewResponse(s.r.list), nil
}

func (s *baseService) GetPlugin(_ context.Context, req *connect.Request[pluginv1.GetPluginRequest]) (*connect.Response[pluginv1.GetPluginResponse], error) {
	d, ok := s.r.details[req.Msg.GetPluginId()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such plugin"))
	}
	return connect.NewResponse(d), nil
}

// baseHandler is the baseline's whole HTTP handler: vanguard in front of the generated
// PluginService handler, REST answers wrapped in the envelope.
func baseHandler(r readResponses) (http.Handler, error) {
	path, h := pluginv1connect.NewPluginServiceHandler(&baseService{r: r})
	transcoder, err := vanguard.NewTranscoder([]*vanguard.Service{
		vanguard.NewService(path, h, vanguard.WithTargetCodecs(vanguard.CodecProto)),
	}, vanguard.WithCodec(func(res vanguard.TypeResolver) vanguard.Codec {
		return &vanguard.JSONCodec{
			MarshalOptions:   protojson.MarshalOptions{Resolver: res, UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{Resolver: res},
		}
	}))
	if err != nil {
		return nil, err
	}
	return withBaseEnvelope(transcoder), nil
}

// withBaseEnvelope wraps the successful REST answers (paths under /api/v1/) in the
// envelope {"success":true,"data":...,"timestamp":...,"request_id":...}, with the request
// id in X-Request-Id too, as Nexus answers; other answers pass unchanged.
func withBaseEnvelope(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		// The envelope wraps the transcoder's plain JSON: it must not compress it (Nexus
		// drops the header too). This server alone sees the request, so it edits it.
		r.Header.Del("Accept-Encoding")
		id := make([]byte, 8)
		_, _ = rand.Read(id)
		reqID := "req_" + hex.EncodeToString(id)
		w.Header().Set("X-Request-Id", reqID)
		bw := &baseBuffer{header: http.Header{}}
		next.ServeHTTP(bw, r)
		if bw.status == 0 {
			bw.status = http.StatusOK
		}
		if bw.status != http.StatusOK {
			for k, v := range bw.header {
				w.Header()[k] = v
			}
			w.WriteHeader(bw.status)
			_, _ = w.Write(bw.body.Bytes())
			return
		}
		data := bytes.TrimSpace(bw.body.Bytes())
		out := make([]byte, 0, len(data)+128)
		out = append(out, `{"success":true,"data":`...)
		out = append(out, data...)
		out = append(out, `,"timestamp":`...)
		out = strconv.AppendQuote(out, time.Now().UTC().Format(time.RFC3339Nano))
		out = append(out, `,"request_id":`...)
		out = strconv.AppendQuote(out, reqID)
		out = append(out, "}\n"...)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		_, _ = w.Write(out)
	})
}

// baseBuffer holds a REST answer until it is wrapped.
type baseBuffer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *baseBuffer) Header() http.Header { return b.header }

// Flush is a no-op (the answer is written whole once wrapped); connect-go's handler
// requires a flusher.
func (b *baseBuffer) Flush() {}

func (b *baseBuffer) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *baseBuffer) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// readsBaseMain is the baseline process: it loads the answers from -responses, serves them
// on a free loopback port, reports the address and serves until ctx ends.
func readsBaseMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(roleReadsBase, flag.ContinueOnError)
	path := fs.String("responses", "", "the prebuilt answers (a list, then the details, length-delimited protobuf)")
	if err := parseChildFlags(fs, args); err != nil {
		return err
	}
	r, err := loadReadResponses(*path)
	if err != nil {
		return err
	}
	h, err := baseHandler(r)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// As `nexus serve` serves: HTTP/1.1 and h2c on one listener, the same timeouts.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           h,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := writeJSON(out, ready{Addr: ln.Addr().String()}); err != nil {
		_ = srv.Close()
		return err
	}
	select {
	case <-ctx.Done():
		_ = srv.Close() // a benchmark peer: no graceful drain needed
		<-served
		return nil
	case err := <-served:
		return err
	}
}
