package server

import (
	"errors"
	"net/http"
	"sort"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// errorDomain is the ErrorInfo domain of Nexus errors.
const errorDomain = "nexus.dev"

// Codes the edge adds to the domain's: an unknown REST route and an oversized request.
const (
	codeRouteNotFound    errs.Code = "NOT_FOUND"
	codeRequestTooLarge  errs.Code = "REQUEST_TOO_LARGE"
	codeMethodNotAllowed errs.Code = "METHOD_NOT_ALLOWED"
)

// wireCode is how one error code appears on each protocol.
type wireCode struct {
	HTTP    int
	Connect connect.Code
}

// errorTable is the one place that maps error codes to HTTP statuses (REST) and Connect
// codes (Connect, gRPC, gRPC-Web). The code itself travels as the ErrorInfo reason.
var errorTable = map[errs.Code]wireCode{
	errs.PluginNotFound:             {http.StatusNotFound, connect.CodeNotFound},
	errs.PluginAlreadyInstalled:     {http.StatusConflict, connect.CodeAlreadyExists},
	errs.PluginDependencyError:      {http.StatusConflict, connect.CodeFailedPrecondition},
	errs.PluginPermissionDenied:     {http.StatusForbidden, connect.CodePermissionDenied},
	errs.PluginInstallationFailed:   {http.StatusInternalServerError, connect.CodeInternal},
	errs.PluginStartupFailed:        {http.StatusInternalServerError, connect.CodeInternal},
	errs.PluginIncompatible:         {http.StatusBadRequest, connect.CodeInvalidArgument},
	errs.PluginConfigurationError:   {http.StatusBadRequest, connect.CodeInvalidArgument},
	errs.PluginCommunicationTimeout: {http.StatusRequestTimeout, connect.CodeDeadlineExceeded},
	errs.PluginUnavailable:          {http.StatusServiceUnavailable, connect.CodeUnavailable},
	errs.ValidationError:            {http.StatusBadRequest, connect.CodeInvalidArgument},
	errs.Unauthenticated:            {http.StatusUnauthorized, connect.CodeUnauthenticated},
	errs.PluginRouteConflict:        {http.StatusConflict, connect.CodeAlreadyExists},
	errs.Unimplemented:              {http.StatusNotImplemented, connect.CodeUnimplemented},
	errs.Internal:                   {http.StatusInternalServerError, connect.CodeInternal},
	codeRouteNotFound:               {http.StatusNotFound, connect.CodeNotFound},
	codeRequestTooLarge:             {http.StatusRequestEntityTooLarge, connect.CodeResourceExhausted},
	codeMethodNotAllowed:            {http.StatusMethodNotAllowed, connect.CodeUnimplemented},
}

// ErrorCode is one of the API's error codes with the HTTP status REST answers it with.
type ErrorCode struct {
	Code       string
	HTTPStatus int
}

// ErrorCodes lists every error code the API answers, sorted by code: for the OpenAPI
// document (server/openapi).
func ErrorCodes() []ErrorCode {
	out := make([]ErrorCode, 0, len(errorTable))
	for code, w := range errorTable {
		out = append(out, ErrorCode{Code: string(code), HTTPStatus: w.HTTP})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

// wireOf returns the wire form of a code (Internal's for unknown codes).
func wireOf(code errs.Code) wireCode {
	if w, ok := errorTable[code]; ok {
		return w
	}
	return errorTable[errs.Internal]
}

// codeFromConnect picks the error code for a Connect error that carries no ErrorInfo
// (raised by connect-go or vanguard themselves, e.g. a malformed body).
func codeFromConnect(code connect.Code) errs.Code {
	switch code {
	case connect.CodeInvalidArgument, connect.CodeOutOfRange:
		return errs.ValidationError
	case connect.CodeUnauthenticated:
		return errs.Unauthenticated
	case connect.CodePermissionDenied:
		return errs.PluginPermissionDenied
	case connect.CodeNotFound:
		return codeRouteNotFound
	case connect.CodeResourceExhausted:
		return codeRequestTooLarge
	case connect.CodeDeadlineExceeded:
		return errs.PluginCommunicationTimeout
	case connect.CodeUnavailable:
		return errs.PluginUnavailable
	case connect.CodeUnimplemented:
		return errs.Unimplemented
	}
	return errs.Internal
}

// toDomain turns any error a handler, an interceptor or connect-go produced into a domain
// error, so that every caller sees one of the API's codes.
func toDomain(err error) *errs.Error {
	err = errs.WrapIfContext(err)
	var de *errs.Error
	if errors.As(err, &de) {
		return de
	}
	var verr *protovalidate.ValidationError
	if errors.As(err, &verr) {
		return validationError(verr)
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		for _, d := range ce.Details() {
			if v, derr := d.Value(); derr == nil {
				if info, ok := v.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
					return errs.New(errs.Code(info.GetReason()), "%s", ce.Message())
				}
			}
		}
		code := codeFromConnect(ce.Code())
		if code == errs.Internal {
			return errs.Wrap(errs.Internal, err, "internal error")
		}
		return errs.Wrap(code, err, "%s", ce.Message())
	}
	return errs.Wrap(errs.Internal, err, "internal error")
}

// validationError lists every protovalidate violation as a field violation.
func validationError(verr *protovalidate.ValidationError) *errs.Error {
	var fields []errs.FieldViolation
	for _, v := range verr.Violations {
		field := protovalidate.FieldPathString(v.Proto.GetField())
		if field == "" {
			field = "(request)"
		}
		fields = append(fields, errs.FieldViolation{Field: field, Description: v.Proto.GetMessage()})
	}
	sort.SliceStable(fields, func(i, j int) bool { return fields[i].Field < fields[j].Field })
	return errs.WithFields(errs.ValidationError, "the request is invalid", fields)
}

// toConnect turns a domain error into a Connect error carrying the code as the ErrorInfo
// reason, the field violations as BadRequest, and the details as a Struct.
func toConnect(de *errs.Error) *connect.Error {
	ce := connect.NewError(wireOf(de.Code).Connect, errors.New(de.Message))
	info := &errdetails.ErrorInfo{Reason: string(de.Code), Domain: errorDomain}
	if d, err := connect.NewErrorDetail(info); err == nil {
		ce.AddDetail(d)
	}
	if len(de.Fields) > 0 {
		br := &errdetails.BadRequest{}
		for _, f := range de.Fields {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f.Field, Description: f.Description})
		}
		if d, err := connect.NewErrorDetail(br); err == nil {
			ce.AddDetail(d)
		}
	}
	if len(de.Details) > 0 {
		if s, err := structpb.NewStruct(jsonCompatible(de.Details)); err == nil {
			if d, err := connect.NewErrorDetail(s); err == nil {
				ce.AddDetail(d)
			}
		}
	}
	return ce
}

// restError is the `error` object of a REST failure.
type restError struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details"`
}

// errorBody builds the `error` object of a REST failure.
func errorBody(de *errs.Error) *restError {
	details := map[string]any{}
	for k, v := range de.Details {
		details[k] = v
	}
	if len(de.Fields) > 0 {
		fields := make([]any, 0, len(de.Fields))
		for _, f := range de.Fields {
			fields = append(fields, map[string]any{"field": f.Field, "description": f.Description})
		}
		details["fields"] = fields
	}
	return &restError{Code: string(de.Code), Message: de.Message, Details: details}
}

// jsonCompatible converts slices of strings and similar into the []any / map[string]any
// forms structpb accepts.
func jsonCompatible(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch t := v.(type) {
		case []string:
			list := make([]any, len(t))
			for i, s := range t {
				list[i] = s
			}
			out[k] = list
		case int:
			out[k] = float64(t)
		default:
			out[k] = v
		}
	}
	return out
}
