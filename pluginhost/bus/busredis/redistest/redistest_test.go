package redistest_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/bus/busredis/redistest"
)

// do sends one inline command to addr and returns the first line of the answer.
func do(t *testing.T, addr, cmd string) (string, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s\r\n", cmd); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestStartStopRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	if !strings.HasPrefix(srv.URL(), "redis://127.0.0.1:") || !strings.HasSuffix(srv.URL(), "/0") {
		t.Fatalf("URL() = %q", srv.URL())
	}
	addr := srv.Addr()
	if got, err := do(t, addr, "SET k v"); err != nil || got != "+OK" {
		t.Fatalf("SET = %q, %v", got, err)
	}

	// A crash loses nothing acknowledged: appendfsync always.
	if err := srv.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if srv.Running() {
		t.Fatal("Running after Kill")
	}
	if _, err := do(t, addr, "PING"); err == nil {
		t.Fatal("PING answered after Kill")
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if srv.Addr() != addr {
		t.Fatalf("Addr after Restart = %s; want %s", srv.Addr(), addr)
	}
	if got, err := do(t, addr, "GET k"); err != nil || got != "$1" {
		t.Fatalf("GET after Kill and Restart = %q, %v; want the value kept", got, err)
	}

	// A running server restarts gracefully.
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if got, err := do(t, addr, "GET k"); err != nil || got != "$1" {
		t.Fatalf("GET after Restart = %q, %v; want the value kept", got, err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestWithoutAOFDataGoes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	if got, err := do(t, srv.Addr(), "SET k v"); err != nil || got != "+OK" {
		t.Fatalf("SET = %q, %v", got, err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if got, err := do(t, srv.Addr(), "GET k"); err != nil || got != "$-1" {
		t.Fatalf("GET after Restart = %q, %v; want nothing (no persistence)", got, err)
	}
}

func TestStartServer(t *testing.T) {
	srv, err := redistest.StartServer(redistest.Options{})
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	dir := srv.Dir()
	if got, err := do(t, srv.Addr(), "PING"); err != nil || got != "+PONG" {
		t.Fatalf("PING = %q, %v", got, err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if srv.Running() {
		t.Fatal("Running after Close")
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := srv.Restart(); err == nil {
		t.Fatal("Restart after Close succeeded")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the server's directory is still there after Close: %v", err)
	}
}
