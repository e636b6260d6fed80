package server

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestQueryParams(t *testing.T) {
	q, err := newQueryParams(restServiceNames)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, method, target string
		want                 string            // the query the transcoder gets, when accepted
		bad                  map[string]string // parameter: a part of its violation, when refused
	}{
		{name: "bare boolean", method: "DELETE", target: "/api/v1/plugins/p-1?force", want: "force=true"},
		{name: "boolean as 1 and 0", method: "DELETE", target: "/api/v1/plugins/p-1?force=1&backup=0", want: "backup=false&force=true"},
		{name: "boolean in capitals", method: "DELETE", target: "/api/v1/plugins/p-1?cleanup_data=TRUE", want: "cleanup_data=true"},
		{name: "optional boolean", method: "GET", target: "/api/v1/plugins?include_disabled", want: "include_disabled=true"},
		{name: "JSON name", method: "GET", target: "/api/v1/plugins?includeDisabled=false", want: "includeDisabled=false"},
		{name: "comma-separated array", method: "GET", target: "/api/v1/plugins/search?tags=auth,security", want: "tags=auth&tags=security"},
		{name: "repeated and comma-separated", method: "GET", target: "/api/v1/plugins/search?tags=a,b&tags=c", want: "tags=a&tags=b&tags=c"},
		{name: "number", method: "GET", target: "/api/v1/plugins/search?min_rating=4.50&page=2", want: "min_rating=4.5&page=2"},
		{name: "time", method: "GET", target: "/api/v1/plugins/p-1/logs?start_time=" + url.QueryEscape("2026-12-06T10:00:00+02:00"), want: "start_time=2026-12-06T08%3A00%3A00Z"},
		{name: "date", method: "GET", target: "/api/v1/plugins/p-1/logs?end_time=2026-12-06", want: "end_time=2026-12-06T00%3A00%3A00Z"},
		{name: "string as written", method: "GET", target: "/api/v1/plugins?search=a,b%20c", want: "search=a%2Cb+c"},
		{name: "not a route", method: "GET", target: "/api/v1/nowhere?x=1", want: "x=1"},

		{name: "boolean word", method: "DELETE", target: "/api/v1/plugins/p-1?force=yes", bad: map[string]string{"force": `takes true or false (or 1 or 0), not "yes"`}},
		{name: "time word", method: "GET", target: "/api/v1/plugins/p-1/logs?start_time=yesterday", bad: map[string]string{"start_time": `RFC 3339 time`}},
		{name: "integer word", method: "GET", target: "/api/v1/plugins/p-1/logs?per_page=many", bad: map[string]string{"per_page": `takes an integer, not "many"`}},
		{name: "integer overflow", method: "GET", target: "/api/v1/plugins/p-1/logs?page=99999999999", bad: map[string]string{"page": "out of range"}},
		{name: "bare integer", method: "GET", target: "/api/v1/plugins/p-1/logs?page", bad: map[string]string{"page": "not an empty value"}},
		{name: "number word", method: "GET", target: "/api/v1/plugins/search?min_rating=NaN", bad: map[string]string{"min_rating": "takes a number"}},
		{name: "unknown", method: "GET", target: "/api/v1/plugins?bogus=1", bad: map[string]string{"bogus": "it takes status, category, search, include_disabled"}},
		{name: "path field", method: "GET", target: "/api/v1/plugins/p-1?plugin_id=other", bad: map[string]string{"plugin_id": "takes no query parameters"}},
		{name: "body route", method: "POST", target: "/api/v1/plugins/p-1/enable?force", bad: map[string]string{"force": "in the JSON body"}},
		{name: "given twice", method: "GET", target: "/api/v1/plugins?status=active&status=error", bad: map[string]string{"status": "more than once"}},
		{name: "every bad one", method: "GET", target: "/api/v1/plugins/p-1/logs?page=x&start_time=y&level=INFO", bad: map[string]string{"page": "integer", "start_time": "RFC 3339"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(c.method, c.target, nil)
			de := q.normalize(r)
			if c.bad == nil {
				if de != nil {
					t.Fatalf("refused: %s %v", de.Message, de.Fields)
				}
				if r.URL.RawQuery != c.want {
					t.Fatalf("query %q, want %q", r.URL.RawQuery, c.want)
				}
				return
			}
			if de == nil {
				t.Fatalf("accepted as %q", r.URL.RawQuery)
			}
			if de.Code != "VALIDATION_ERROR" || len(de.Fields) != len(c.bad) {
				t.Fatalf("%s %q %v", de.Code, de.Message, de.Fields)
			}
			for _, f := range de.Fields {
				if want, ok := c.bad[f.Field]; !ok || !strings.Contains(f.Description, want) {
					t.Errorf("%s: %q, want it to say %q", f.Field, f.Description, want)
				}
				if !strings.Contains(de.Message, `"`+f.Field+`"`) {
					t.Errorf("message %q does not name %s", de.Message, f.Field)
				}
			}
		})
	}
}
