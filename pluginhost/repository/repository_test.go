package repository_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/repository"
)

func TestRoundTrip(t *testing.T) {
	pub, priv := newKey(t)
	keyPath := filepath.Join(t.TempDir(), "repo.key")
	if err := repository.WritePrivateKey(keyPath, priv); err != nil {
		t.Fatal(err)
	}
	priv, err := repository.ReadPrivateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := buildRepo(t, priv)
	srv := httptest.NewServer(repository.Handler(dir))
	t.Cleanup(srv.Close)

	for name, base := range map[string]string{
		"http index URL":     srv.URL + "/index.json",
		"http directory URL": srv.URL,
		"file directory URL": "file://" + filepath.ToSlash(dir) + "/",
		"file index URL":     "file://" + filepath.ToSlash(dir) + "/index.json",
	} {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			data, err := repository.Fetch(ctx, base, repository.IndexFile, repository.MaxIndexBytes, 5*time.Second)
			if err != nil {
				t.Fatalf("Fetch index: %v", err)
			}
			idx, err := repository.ParseIndex(data)
			if err != nil {
				t.Fatalf("ParseIndex: %v", err)
			}
			if idx.Name != "test" || len(idx.Plugins) != 2 || idx.Plugins[0].ID != "analytics-plugin" {
				t.Fatalf("index = %+v", idx)
			}
			p := idx.Plugin("analytics-plugin")
			if got := [3]string{p.Versions[0].Version, p.Versions[1].Version, p.Versions[2].Version}; got != [3]string{"2.0.0", "1.2.0", "1.0.0"} {
				t.Fatalf("versions = %v, want newest first", got)
			}
			if p.Name != "analytics-plugin name" || p.Compatibility.NexusVersion != ">=3.0.0" || p.Author != "Test Author" {
				t.Errorf("plugin fields not from the newest version: %+v", p)
			}
			v, err := p.Resolve("latest", "1.5.0", "linux", "amd64")
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if v.Version != "1.2.0" || v.Dependencies["auth-plugin"] != "^0.1.0" {
				t.Fatalf("Resolve = %+v, want 1.2.0 with its dependency", v)
			}
			pkg, err := repository.Fetch(ctx, base, v.URL, 1<<20, 5*time.Second)
			if err != nil {
				t.Fatalf("Fetch package: %v", err)
			}
			if err := repository.VerifyPackage(v, p.ID, pkg, []repository.PublicKey{pub}, false); err != nil {
				t.Fatalf("VerifyPackage: %v", err)
			}
		})
	}
}

func TestVerifyPackage(t *testing.T) {
	pub, priv := newKey(t)
	otherPub, otherPriv := newKey(t)
	dir, idx := buildRepo(t, priv)
	good := idx.Plugin("analytics-plugin").Versions[1] // 1.2.0
	data, err := os.ReadFile(filepath.Join(dir, good.URL))
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), data...)
	flipped[len(flipped)/2] ^= 0x01
	unsigned := good
	unsigned.Signature = nil
	otherSigned := good
	otherSigned.Signature, _ = repository.Sign(otherPriv, "analytics-plugin", good)
	renamed := good
	renamed.Version = "1.0.0" // signature was made for 1.2.0
	otherVersion := idx.Plugin("analytics-plugin").Versions[2]
	otherVersionData, _ := os.ReadFile(filepath.Join(dir, otherVersion.URL))
	// An entry signed for 1.0.0's bytes but claiming 1.2.0: the signature covers the version.
	swapped := otherVersion
	swapped.Version = "1.2.0"
	// A correctly signed entry whose package holds another version than the index says.
	lying := otherVersion
	lying.Version = "1.2.0"
	lying.Signature, _ = repository.Sign(priv, "analytics-plugin", lying)

	trusted := []repository.PublicKey{pub}
	tests := []struct {
		name          string
		v             repository.Version
		id            string
		data          []byte
		trusted       []repository.PublicKey
		allowUnsigned bool
		want          error // nil: accepted
	}{
		{"valid", good, "analytics-plugin", data, trusted, false, nil},
		{"valid, several trusted keys", good, "analytics-plugin", data, []repository.PublicKey{otherPub, pub}, false, nil},
		{"byte flipped", good, "analytics-plugin", flipped, trusted, false, repository.ErrChecksumMismatch},
		{"truncated", good, "analytics-plugin", data[:len(data)-1], trusted, true, repository.ErrSizeMismatch},
		{"untrusted key", otherSigned, "analytics-plugin", data, trusted, false, repository.ErrUntrustedKey},
		{"untrusted key, unsigned allowed", otherSigned, "analytics-plugin", data, trusted, true, repository.ErrUntrustedKey},
		{"no trusted keys", good, "analytics-plugin", data, nil, false, repository.ErrUntrustedKey},
		{"unsigned", unsigned, "analytics-plugin", data, trusted, false, repository.ErrUnsigned},
		{"unsigned, allowed", unsigned, "analytics-plugin", data, trusted, true, nil},
		{"version changed in the index", renamed, "analytics-plugin", data, trusted, false, repository.ErrBadSignature},
		{"signature of other bytes", swapped, "analytics-plugin", otherVersionData, trusted, false, repository.ErrBadSignature},
		{"plugin id changed", good, "auth-plugin", data, trusted, false, repository.ErrBadSignature},
		{"manifest disagrees with a signed index", lying, "analytics-plugin", otherVersionData, trusted, false, repository.ErrManifestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := repository.VerifyPackage(tt.v, tt.id, tt.data, tt.trusted, tt.allowUnsigned)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyPackage: %v", err)
				}
				return
			}
			wantCode(t, err, errs.PluginInstallationFailed)
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifyPackage error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	_, priv := newKey(t)
	_, idx := buildRepo(t, priv)
	analytics := idx.Plugin("analytics-plugin")
	auth := idx.Plugin("auth-plugin")
	pre := *analytics
	pre.Versions = append([]repository.Version{{Version: "3.0.0-rc.1", URL: "x.tar.gz", Size: 1, SHA256: analytics.Versions[0].SHA256}}, pre.Versions...)

	tests := []struct {
		name       string
		p          *repository.Plugin
		constraint string
		host       string
		goos       string
		goarch     string
		want       string    // version, when no error
		code       errs.Code // expected error code
	}{
		{"latest compatible", analytics, "latest", "1.5.0", "linux", "amd64", "1.2.0", ""},
		{"empty is latest", analytics, "", "3.1.0", "linux", "amd64", "2.0.0", ""},
		{"constraint", analytics, "~1.0.0", "3.1.0", "linux", "amd64", "1.0.0", ""},
		{"pre-release server accepts its release", analytics, "^2", "3.0.0-rc.1", "linux", "amd64", "2.0.0", ""},
		{"latest skips pre-releases", &pre, "latest", "3.1.0", "linux", "amd64", "2.0.0", ""},
		{"explicit pre-release", &pre, ">=3.0.0-0", "3.1.0", "linux", "amd64", "3.0.0-rc.1", ""},
		{"incompatible nexus_version", analytics, "^2.0.0", "1.5.0", "linux", "amd64", "", errs.PluginIncompatible},
		{"wrong arch", auth, "latest", "1.0.0", "linux", "amd64", "", errs.PluginIncompatible},
		{"wrong os", auth, "latest", "1.0.0", "darwin", "arm64", "", errs.PluginIncompatible},
		{"right platform", auth, "latest", "1.0.0", "linux", "arm64", "0.1.0", ""},
		{"unsatisfiable constraint", analytics, ">=9.0.0", "1.5.0", "linux", "amd64", "", errs.PluginNotFound},
		{"invalid constraint", analytics, "newest", "1.5.0", "linux", "amd64", "", errs.ValidationError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := tt.p.Resolve(tt.constraint, tt.host, tt.goos, tt.goarch)
			if tt.code != "" {
				e := wantCode(t, err, tt.code)
				if tt.code == errs.PluginIncompatible && e.Details["reasons"] == nil {
					t.Errorf("incompatibility without reasons: %v", e)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if v.Version != tt.want {
				t.Fatalf("Resolve = %s, want %s", v.Version, tt.want)
			}
		})
	}
}

func TestParseConstraint(t *testing.T) {
	for _, ok := range []string{"*", ">=1.2.0", "^1.2 || ~2.0.1", ">=1.0.0 <2.0.0"} {
		if _, err := repository.ParseConstraint(ok); err != nil {
			t.Errorf("ParseConstraint(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "  ", "newest", ">=1.0.0 <", string(make([]byte, repository.MaxConstraintLen+1))} {
		if _, err := repository.ParseConstraint(bad); !errs.Is(err, errs.ValidationError) {
			t.Errorf("ParseConstraint(%.20q) error = %v, want a validation error", bad, err)
		}
	}
}

func TestFetchCancelled(t *testing.T) {
	_, priv := newKey(t)
	dir, _ := buildRepo(t, priv)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := repository.Fetch(ctx, "file://"+dir, repository.IndexFile, 0, 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Fetch with a cancelled context: %v", err)
	}
}
