package server

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// queryParams reads the query parameters of REST calls the way people write them, before
// the transcoder sees them, and answers VALIDATION_ERROR naming the parameter for any it
// cannot take. The transcoder alone took only protojson's forms and answered in its
// decoder's words (`?force` and `?force=1` failed with "unexpected end of JSON input",
// `tags=a,b` searched for the one tag "a,b", an unknown parameter named a protobuf field
// path). What it accepts, from each route's request message and its google.api.http rule:
//
//   - a boolean as true, false, 1 or 0 (any case), or bare (`?force`) for true;
//   - a repeated field as repeated keys, comma-separated values, or both;
//   - an integer or a number in decimal, checked against the field's type (the range rules
//     of the request's validation apply after);
//   - an enum by value name (any case) or number;
//   - a google.protobuf.Timestamp in RFC 3339, or a date (2026-12-07, midnight UTC);
//   - a parameter by its proto name (`include_disabled`) or its JSON name
//     (`includeDisabled`), fields of nested messages with dots.
//
// A parameter given twice for a field that holds one value, a parameter the route does
// not take (a field bound by the path or the body, or none), and a bad value are refused,
// all of them in one answer, each as a field violation named as the caller wrote it.
type queryParams struct {
	routes *http.ServeMux // the REST routes; each handler is the route's queryRoute
}

// queryRoute is one REST route's request message, less the fields its path and body bind.
type queryRoute struct {
	msg   protoreflect.MessageDescriptor
	bound map[protoreflect.Name]bool // top-level fields bound by the path or the body
	body  bool                       // the body binds every field: the route takes no query
}

func (queryRoute) ServeHTTP(http.ResponseWriter, *http.Request) {}

// newQueryParams reads the REST routes of the named services from their google.api.http
// rules (and additional bindings).
func newQueryParams(services []string) (*queryParams, error) {
	q := &queryParams{routes: http.NewServeMux()}
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is not a service", name)
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil {
				continue
			}
			for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
				if err := q.add(md.Input(), r); err != nil {
					return nil, fmt.Errorf("%s: %w", md.FullName(), err)
				}
			}
		}
	}
	return q, nil
}

// add registers one binding of a method.
func (q *queryParams) add(msg protoreflect.MessageDescriptor, r *annotations.HttpRule) error {
	var method, path string
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		method, path = http.MethodGet, p.Get
	case *annotations.HttpRule_Put:
		method, path = http.MethodPut, p.Put
	case *annotations.HttpRule_Post:
		method, path = http.MethodPost, p.Post
	case *annotations.HttpRule_Delete:
		method, path = http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		method, path = http.MethodPatch, p.Patch
	default:
		return nil // custom verbs take no query here
	}
	route := queryRoute{msg: msg, bound: map[protoreflect.Name]bool{}, body: r.GetBody() == "*"}
	if b := r.GetBody(); b != "" && b != "*" {
		route.bound[protoreflect.Name(b)] = true
	}
	// Path variables: {field} or {field=pattern}; the route's pattern keeps the segments.
	var pattern strings.Builder
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		pattern.WriteByte('/')
		if v, ok := strings.CutPrefix(seg, "{"); ok {
			field, tmpl, _ := strings.Cut(strings.TrimSuffix(v, "}"), "=")
			top, _, _ := strings.Cut(field, ".")
			route.bound[protoreflect.Name(top)] = true
			wildcard := strings.ReplaceAll(field, ".", "_")
			if strings.Contains(tmpl, "**") {
				wildcard += "..."
			}
			pattern.WriteString("{" + wildcard + "}")
			continue
		}
		pattern.WriteString(seg)
	}
	return registerRoute(q.routes, method+" "+pattern.String(), route)
}

// registerRoute adds a route to mux, with the error ServeMux panics with (two rules
// with one pattern) returned instead.
func registerRoute(mux *http.ServeMux, pattern string, route queryRoute) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("route %s: %v", pattern, p)
		}
	}()
	mux.Handle(pattern, route)
	return nil
}

// normalize rewrites r's query into the forms the transcoder takes, or returns the
// VALIDATION_ERROR that names every parameter it cannot take. r's path must be the REST
// path under /api/v1/. A path that is no route is left to the transcoder (404 or 405).
func (q *queryParams) normalize(r *http.Request) *errs.Error {
	if r.URL.RawQuery == "" {
		return nil
	}
	h, pattern := q.routes.Handler(r)
	route, ok := h.(queryRoute)
	if !ok || pattern == "" {
		return nil
	}
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return errs.New(errs.ValidationError, "the query string is malformed: %v", err)
	}
	out, bad := route.read(values)
	if len(bad) > 0 {
		return queryError(bad)
	}
	r.URL.RawQuery = out.Encode()
	return nil
}

// read checks every parameter of values and returns them in the forms the transcoder
// takes, or the violations.
func (rt queryRoute) read(values url.Values) (url.Values, []errs.FieldViolation) {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := url.Values{}
	var bad []errs.FieldViolation
	for _, key := range keys {
		fd, why := rt.field(key)
		if fd == nil {
			bad = append(bad, errs.FieldViolation{Field: key, Description: why})
			continue
		}
		vals := values[key]
		if fd.IsList() {
			var split []string
			for _, v := range vals {
				split = append(split, strings.Split(v, ",")...)
			}
			vals = split
		} else if len(vals) > 1 {
			bad = append(bad, errs.FieldViolation{Field: key, Description: "is given more than once; it takes one value"})
			continue
		}
		for _, v := range vals {
			nv, why := queryValue(fd, v)
			if why != "" {
				bad = append(bad, errs.FieldViolation{Field: key, Description: why})
				break
			}
			out.Add(key, nv)
		}
	}
	return out, bad
}

// queryError is the VALIDATION_ERROR naming every bad parameter.
func queryError(bad []errs.FieldViolation) *errs.Error {
	msg := "invalid query parameter"
	if len(bad) > 1 {
		msg += "s"
	}
	for i, f := range bad {
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		msg += sep + strconv.Quote(f.Field)
	}
	return errs.WithFields(errs.ValidationError, msg, bad)
}

// decodeQuery sets msg's top-level scalar fields from a query string read as normalize
// reads it, for the REST paths that are no google.api.http route (the Server-Sent Events
// streams); bound are the fields the path sets.
func decodeQuery(msg proto.Message, values url.Values, bound ...protoreflect.Name) *errs.Error {
	m := msg.ProtoReflect()
	rt := queryRoute{msg: m.Descriptor(), bound: map[protoreflect.Name]bool{}}
	for _, b := range bound {
		rt.bound[b] = true
	}
	out, bad := rt.read(values)
	if len(bad) > 0 {
		return queryError(bad)
	}
	for key, vals := range out {
		fd := rt.lookup(key)
		for _, v := range vals {
			pv, ok := scalarValue(fd, v)
			if !ok || strings.Contains(key, ".") {
				return queryError([]errs.FieldViolation{{Field: key, Description: "cannot be given in the query of this path"}})
			}
			if fd.IsList() {
				m.Mutable(fd).List().Append(pv)
			} else {
				m.Set(fd, pv)
			}
		}
	}
	return nil
}

// scalarValue converts a value read by queryValue to fd's type; false for kinds it does
// not set (messages, bytes).
func scalarValue(fd protoreflect.FieldDescriptor, v string) (protoreflect.Value, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(v), true
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(v == "true"), true
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(v, 10, 32)
		return protoreflect.ValueOfInt32(int32(n)), err == nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(v, 10, 64)
		return protoreflect.ValueOfInt64(n), err == nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := strconv.ParseUint(v, 10, 32)
		return protoreflect.ValueOfUint32(uint32(n)), err == nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := strconv.ParseUint(v, 10, 64)
		return protoreflect.ValueOfUint64(n), err == nil
	case protoreflect.DoubleKind:
		f, err := strconv.ParseFloat(v, 64)
		return protoreflect.ValueOfFloat64(f), err == nil
	case protoreflect.FloatKind:
		f, err := strconv.ParseFloat(v, 32)
		return protoreflect.ValueOfFloat32(float32(f)), err == nil
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByName(protoreflect.Name(v))
		if ev == nil {
			return protoreflect.Value{}, false
		}
		return protoreflect.ValueOfEnum(ev.Number()), true
	}
	return protoreflect.Value{}, false
}

// field resolves a query key (dotted for nested messages) to the field it sets, or says
// why the route does not take it.
func (rt queryRoute) field(key string) (protoreflect.FieldDescriptor, string) {
	if fd := rt.lookup(key); fd != nil {
		return fd, ""
	}
	if rt.body {
		return nil, "is not a parameter of this call: it takes its fields in the JSON body"
	}
	return nil, "is not a parameter of this call; it takes " + rt.accepted()
}

// lookup is the field a query key sets, or nil.
func (rt queryRoute) lookup(key string) protoreflect.FieldDescriptor {
	if rt.body || key == "" {
		return nil
	}
	msg := rt.msg
	segs := strings.Split(key, ".")
	for i, seg := range segs {
		fd := fieldByName(msg, seg)
		if fd == nil || (i == 0 && rt.bound[fd.Name()]) || fd.IsMap() {
			return nil
		}
		if i == len(segs)-1 {
			if fd.Kind() == protoreflect.MessageKind && !isQueryLeaf(fd.Message()) {
				return nil
			}
			return fd
		}
		if fd.Kind() != protoreflect.MessageKind || fd.IsList() || isQueryLeaf(fd.Message()) {
			return nil
		}
		msg = fd.Message()
	}
	return nil
}

// accepted lists the parameters a route takes, for the error that names an unknown one.
func (rt queryRoute) accepted() string {
	var names []string
	fields := rt.msg.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if rt.bound[fd.Name()] || fd.IsMap() || (fd.Kind() == protoreflect.MessageKind && !isQueryLeaf(fd.Message())) {
			continue
		}
		names = append(names, string(fd.Name()))
	}
	if len(names) == 0 {
		return "no query parameters"
	}
	return strings.Join(names, ", ")
}

func fieldByName(msg protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	if fd := msg.Fields().ByName(protoreflect.Name(name)); fd != nil {
		return fd
	}
	return msg.Fields().ByJSONName(name)
}

const timestampName protoreflect.FullName = "google.protobuf.Timestamp"

// isQueryLeaf reports whether a message field is set from one query value.
func isQueryLeaf(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case timestampName, "google.protobuf.BoolValue", "google.protobuf.StringValue",
		"google.protobuf.Int32Value", "google.protobuf.Int64Value", "google.protobuf.UInt32Value",
		"google.protobuf.UInt64Value", "google.protobuf.FloatValue", "google.protobuf.DoubleValue":
		return true
	}
	return false
}

// queryValue checks one value for fd and returns it in the form the transcoder takes, or
// what is wrong with it, in the caller's words.
func queryValue(fd protoreflect.FieldDescriptor, v string) (string, string) {
	kind := fd.Kind()
	if kind == protoreflect.MessageKind {
		md := fd.Message()
		if md.FullName() == timestampName {
			return queryTime(v)
		}
		kind = md.Fields().ByName("value").Kind() // a wrapper
	}
	got := strconv.Quote(v)
	if v == "" {
		got = "an empty value"
	}
	switch kind {
	case protoreflect.BoolKind:
		switch strings.ToLower(v) {
		case "", "true", "1":
			return "true", ""
		case "false", "0":
			return "false", ""
		}
		return "", "takes true or false (or 1 or 0), not " + got
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return queryInt(v, 32, got)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return queryInt(v, 64, got)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return queryUint(v, 32, got)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return queryUint(v, 64, got)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return "", "takes a number, not " + got
		}
		return strconv.FormatFloat(f, 'g', -1, 64), ""
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		if n, err := strconv.ParseInt(v, 10, 32); err == nil && values.ByNumber(protoreflect.EnumNumber(n)) != nil {
			return string(values.ByNumber(protoreflect.EnumNumber(n)).Name()), ""
		}
		names := make([]string, 0, values.Len())
		for i := 0; i < values.Len(); i++ {
			name := string(values.Get(i).Name())
			if strings.EqualFold(name, v) {
				return name, ""
			}
			names = append(names, name)
		}
		return "", "takes one of " + strings.Join(names, ", ") + ", not " + got
	}
	return v, "" // strings and bytes as written
}

func queryInt(v string, bits int, got string) (string, string) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, bits)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return "", fmt.Sprintf("is out of range for a %d-bit integer: %s", bits, got)
		}
		return "", "takes an integer, not " + got
	}
	return strconv.FormatInt(n, 10), ""
}

func queryUint(v string, bits int, got string) (string, string) {
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, bits)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return "", fmt.Sprintf("is out of range for a %d-bit unsigned integer: %s", bits, got)
		}
		return "", "takes a non-negative integer, not " + got
	}
	return strconv.FormatUint(n, 10), ""
}

// queryTime takes an RFC 3339 time, or a date for its midnight UTC, and returns it in
// the form protojson reads.
func queryTime(v string) (string, string) {
	s := strings.TrimSpace(v)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC().Format(time.RFC3339Nano), ""
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.Format(time.RFC3339Nano), ""
	}
	got := strconv.Quote(v)
	if v == "" {
		got = "an empty value"
	}
	return "", "takes an RFC 3339 time such as 2026-12-07T10:00:00Z (or a date such as 2026-12-07), not " + got
}
