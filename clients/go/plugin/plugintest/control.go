package plugintest

import (
	"context"
	"fmt"
	"slices"

	"github.com/nexus-platform/nexus/clients/go/plugin"
	pluginhostv1 "github.com/nexus-platform/nexus/gen/go/nexus/pluginhost/v1"
)

// This file holds what the host asks of the plugin besides deliveries: health checks,
// configuration changes and the shutdown request.

// CheckHealth asks the plugin for its health checks (OnHealthCheck, or the SDK's single
// passing "sdk" check) and returns its report. Errors: an *plugin.Error with code
// PLUGIN_UNAVAILABLE when the plugin is not connected (or disconnects), or the end of ctx
// (or of Options.Timeout, when ctx has no deadline).
func (h *Host) CheckHealth(ctx context.Context) ([]plugin.Check, error) {
	ctx, cancel := h.bound(ctx)
	defer cancel()
	s, err := h.current()
	if err != nil {
		return nil, err
	}
	id := h.newID("hc")
	answers := h.expect(id)
	defer h.forget(id)
	err = s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_HealthCheck{
		HealthCheck: &pluginhostv1.HealthCheckRequest{CheckId: id}}})
	if err != nil {
		return nil, err
	}
	a, err := h.await(ctx, s, answers, "answer its health check")
	if err != nil {
		return nil, err
	}
	return checksFromProto(a.frame.GetHealthReport().GetChecks()), nil
}

// UpdateConfig pushes a configuration change to the plugin, as an administrator's update
// would: values are merged into the current configuration (a nil value removes its
// field), and the plugin is sent the whole result, the fields that changed, and whether
// one of them takes effect only after a restart (Options.RestartRequired). It returns
// whether the plugin accepted the change (OnConfigChange returned nil), and if not, the
// plugin's reason; an accepted change becomes the host's configuration (Config), which is
// also what a reconnecting plugin is welcomed with.
//
// Errors: VALIDATION_ERROR for values that are not JSON, PLUGIN_UNAVAILABLE when the
// plugin is not connected (or disconnects), or the end of ctx (or of Options.Timeout, when
// ctx has no deadline).
func (h *Host) UpdateConfig(ctx context.Context, values map[string]any) (accepted bool, reason string, err error) {
	ctx, cancel := h.bound(ctx)
	defer cancel()
	s, err := h.current()
	if err != nil {
		return false, "", err
	}
	values, err = normalize(values)
	if err != nil {
		return false, "", hostError(codeValidation, "values: %v", err)
	}
	h.mu.Lock()
	next := cloneMap(h.config)
	h.mu.Unlock()
	var updated []string
	for k, v := range values {
		old, had := next[k]
		if v == nil {
			delete(next, k)
		} else {
			next[k] = v
		}
		if had != (v != nil) || (had && !sameJSON(old, v)) {
			updated = append(updated, k)
		}
	}
	slices.Sort(updated)
	restart := slices.ContainsFunc(updated, func(f string) bool { return slices.Contains(h.opts.RestartRequired, f) })
	cfg, err := toStruct(next)
	if err != nil {
		return false, "", hostError(codeValidation, "values: %v", err)
	}
	id := h.newID("cfg")
	answers := h.expect(id)
	defer h.forget(id)
	err = s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_ConfigChanged{ConfigChanged: &pluginhostv1.ConfigChanged{
		Config: cfg, UpdatedFields: updated, RestartRequired: restart, ChangeId: id,
	}}})
	if err != nil {
		return false, "", err
	}
	a, err := h.await(ctx, s, answers, "acknowledge the configuration")
	if err != nil {
		return false, "", err
	}
	ack := a.frame.GetConfigAck()
	if !ack.GetAccepted() {
		return false, ack.GetError(), nil
	}
	h.mu.Lock()
	h.config = next
	h.notifyLocked()
	h.mu.Unlock()
	return true, "", nil
}

// Shutdown asks the plugin to stop, as the host does before it stops a plugin: the plugin
// finishes the deliveries it is handling, runs OnShutdown and closes its stream. The grace
// period it is given is what is left of ctx's deadline (or of Options.Timeout). Shutdown
// then waits for plugin.Run to return, and returns its result (see Wait).
func (h *Host) Shutdown(ctx context.Context, reason string) error {
	ctx, cancel := h.bound(ctx)
	defer cancel()
	s, err := h.current()
	if err != nil {
		select {
		case <-h.runDone:
			return h.Wait(ctx) // already stopped
		default:
			return err
		}
	}
	err = s.send(&pluginhostv1.ConnectResponse{Frame: &pluginhostv1.ConnectResponse_Shutdown{Shutdown: &pluginhostv1.Shutdown{
		Reason: reason, TimeoutSeconds: deadlineIn(ctx),
	}}})
	if err != nil {
		return err
	}
	return h.Wait(ctx)
}

// await waits for an answer on answers, sent on s.
func (h *Host) await(ctx context.Context, s *session, answers <-chan answer, what string) (answer, error) {
	select {
	case a := <-answers:
		return a, nil
	case <-s.done:
		return answer{}, hostError(codeUnavailable, "plugin %s disconnected", h.opts.PluginID)
	case <-ctx.Done():
		return answer{}, fmt.Errorf("plugintest: plugin %s did not %s: %w", h.opts.PluginID, what, ctx.Err())
	}
}
