package gridmesh

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// DefaultTimeout is the deadline Dial gives a unary call whose context has none.
// Streams (WatchTask, GetResult, Consume) last as long as their context: give
// each one a deadline of its own with context.WithTimeout.
const DefaultTimeout = 30 * time.Second

// APIKey sends `authorization: Bearer <key>` with every call, the way the
// edge authenticates a client. Dial installs it for the whole connection; to
// call as another key on the same connection, pass grpc.PerRPCCredentials(APIKey(k)).
type APIKey string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (k APIKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: gRPC
// refuses to send the key over a connection without TLS.
func (APIKey) RequireTransportSecurity() bool { return true }

// Dial makes a client connection to the edge at host:port, over TLS checked
// against the PEM CA in caFile, sending apiKey with every call. Like
// grpc.NewClient, it connects lazily, on the first call. One connection is
// shared by every client of that key (gridmeshv1.NewSchedulerClient(conn), ...);
// Close it when done. opts come after (and so override) Dial's own.
func Dial(edge, caFile, apiKey string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	tls, err := credentials.NewClientTLSFromFile(caFile, "")
	if err != nil {
		return nil, fmt.Errorf("reading the edge's CA: %w", err)
	}
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(tls),
		grpc.WithPerRPCCredentials(APIKey(apiKey)),
		grpc.WithUnaryInterceptor(defaultDeadline),
	}, opts...)
	return grpc.NewClient(edge, opts...)
}

// defaultDeadline gives a unary call without a deadline DefaultTimeout, so
// that no call can hang on a lost connection.
func defaultDeadline(ctx context.Context, method string, req, reply any,
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption,
) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}
