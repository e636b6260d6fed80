package manifest_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

func TestCheckCompatible(t *testing.T) {
	t.Parallel()
	cases := []struct {
		constraint, server string
		want               errs.Code // "" for compatible
	}{
		{">=1.0.0", "1.0.0", ""},
		{">=1.0.0", "2.3.4", ""},
		{">=1.0.0", "0.9.9", errs.PluginIncompatible},
		{"^1.2", "1.9.0", ""},
		{"^1.2", "2.0.0", errs.PluginIncompatible},
		{"*", "0.1.0", ""},
		{"", "0.1.0", ""},
		{">=1.0.0", "1.3.0-rc.1", ""},
		{">=1.3.0", "1.3.0-rc.1", ""},
		{"<1.3.0", "1.3.0-rc.1", ""},
		{">=1.0.0", "1.0.0+build.7", ""},
		{">=1.0.0", "not-a-version", errs.Internal},
		{"garbage", "1.0.0", errs.PluginIncompatible},
	}
	for _, c := range cases {
		t.Run(c.constraint+" vs "+c.server, func(t *testing.T) {
			t.Parallel()
			m := &manifest.Manifest{ID: "demo-plugin", NexusVersion: c.constraint}
			err := m.CheckCompatible(c.server)
			if c.want == "" {
				if err != nil {
					t.Fatalf("CheckCompatible = %v", err)
				}
				return
			}
			if got := errs.CodeOf(err); got != c.want {
				t.Fatalf("CheckCompatible = %v, want code %s", err, c.want)
			}
		})
	}
}

func TestCheckCompatibleNamesConstraintAndServer(t *testing.T) {
	t.Parallel()
	m := &manifest.Manifest{ID: "analytics-plugin", NexusVersion: ">=2.0.0"}
	err := m.CheckCompatible("1.4.0")
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != errs.PluginIncompatible {
		t.Fatalf("err = %v", err)
	}
	if want := "plugin analytics-plugin requires Nexus >=2.0.0, but this server is version 1.4.0"; e.Message != want {
		t.Errorf("Message = %q, want %q", e.Message, want)
	}
	if e.Details["nexus_version"] != ">=2.0.0" || e.Details["server_version"] != "1.4.0" {
		t.Errorf("Details = %v", e.Details)
	}
}

func TestDependencyIDs(t *testing.T) {
	t.Parallel()
	m := &manifest.Manifest{Dependencies: manifest.Dependencies{Plugins: map[string]string{"zeta-plugin": "*", "auth-plugin": ">=1", "core-db": "^2"}}}
	if got, want := m.DependencyIDs(), []string{"auth-plugin", "core-db", "zeta-plugin"}; !slices.Equal(got, want) {
		t.Fatalf("DependencyIDs() = %v, want %v", got, want)
	}
	if got := (&manifest.Manifest{}).DependencyIDs(); got != nil {
		t.Fatalf("DependencyIDs() = %v, want nil", got)
	}
}

func TestSupportsPlatform(t *testing.T) {
	t.Parallel()
	cases := []struct {
		os, arch     []string
		goos, goarch string
		want         bool
	}{
		{nil, nil, "linux", "amd64", true},
		{[]string{"linux"}, nil, "linux", "riscv64", true},
		{[]string{"linux"}, nil, "darwin", "arm64", false},
		{nil, []string{"amd64", "arm64"}, "windows", "arm64", true},
		{[]string{"linux"}, []string{"amd64"}, "linux", "arm64", false},
	}
	for _, c := range cases {
		t.Run(c.goos+"/"+c.goarch, func(t *testing.T) {
			m := &manifest.Manifest{OS: c.os, Arch: c.arch}
			if got := m.SupportsPlatform(c.goos, c.goarch); got != c.want {
				t.Fatalf("SupportsPlatform = %v, want %v", got, c.want)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"auth-plugin": true, "abc": true, "a1-b2": true, "ab": false, "-abc": false, "abc-": false,
		"Auth": false, "1abc": false, "a_b_c": false, "install": false, "broadcast": false,
		"search": false, "repositories": false, "install-helper": true,
	}
	for id, want := range cases {
		t.Run(id, func(t *testing.T) {
			if got := manifest.ValidID(id); got != want {
				t.Fatalf("ValidID(%q) = %v, want %v", id, got, want)
			}
		})
	}
}
