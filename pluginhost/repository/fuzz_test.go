package repository_test

import (
	"reflect"
	"testing"

	"github.com/Masterminds/semver/v3"

	"github.com/nexus-platform/nexus/pluginhost/repository"
)

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(validIndex))
	f.Add([]byte(`{"format":1,"generated_at":"2024-01-01T10:00:00+02:00","plugins":[]}`))
	f.Add([]byte(`{"format":1,"generated_at":"0001-01-01T00:00:00Z","plugins":null}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := repository.ParseIndex(data)
		if err != nil {
			return
		}
		out, err := idx.Marshal()
		if err != nil {
			t.Fatalf("accepted index does not marshal: %v", err)
		}
		again, err := repository.ParseIndex(out)
		if err != nil {
			t.Fatalf("re-marshalled index refused: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(idx, again) {
			t.Fatalf("re-parsed index differs:\n%#v\n%#v", idx, again)
		}
	})
}

func FuzzParseConstraint(f *testing.F) {
	for _, s := range []string{"*", ">=1.2.0", "^1.2 || ~2.0.1", ">=1.0.0-0 <2", "1.x", "=1.2.3+build", "!=1.0.0", "> 1 , < 3"} {
		f.Add(s, "1.2.3")
	}
	f.Fuzz(func(t *testing.T, s, version string) {
		c, err := repository.ParseConstraint(s)
		if err != nil {
			return
		}
		if v, err := semver.NewVersion(version); err == nil {
			c.Check(v)
		}
		_ = c.String()
	})
}
