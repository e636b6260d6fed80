package server

import (
	"context"

	"connectrpc.com/connect"

	pluginv1 "github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1"
	"github.com/nexus-platform/nexus/gen/go/nexus/plugin/v1/pluginv1connect"
	"github.com/nexus-platform/nexus/pluginhost/cluster"
)

// clusterService implements nexus.plugin.v1.ClusterService.
type clusterService struct {
	pluginv1connect.UnimplementedClusterServiceHandler
	cluster replicaLister
}

// replicaLister is what clusterService needs of the server's membership of the replicas
// (a *cluster.Membership).
type replicaLister interface {
	ID() string
	Replicas(ctx context.Context) ([]cluster.Replica, error)
	RemoteSessions(pluginID string) []cluster.Session
}

// The status of a replica in ListReplicas.
const (
	replicaUp   = "up"
	replicaDown = "down"
)

func (c *clusterService) ListReplicas(ctx context.Context, _ *connect.Request[pluginv1.ListReplicasRequest]) (*connect.Response[pluginv1.ListReplicasResponse], error) {
	replicas, err := c.cluster.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	out := &pluginv1.ListReplicasResponse{Self: c.cluster.ID(), Replicas: make([]*pluginv1.Replica, 0, len(replicas))}
	for _, r := range replicas {
		status := replicaDown
		if r.Up {
			status = replicaUp
		}
		out.Replicas = append(out.Replicas, &pluginv1.Replica{
			Id: r.ID, AdvertiseUrl: r.AdvertiseURL, Version: r.Version, StartedAt: ts(r.StartedAt),
			LastHeartbeat: ts(r.HeartbeatAt), Status: status, Instances: int32(r.Instances),
			HeartbeatIntervalSeconds: r.HeartbeatInterval.Seconds(),
		})
	}
	return connect.NewResponse(out), nil
}
