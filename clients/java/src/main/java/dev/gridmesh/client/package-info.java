/**
 * Small helpers around the classes buf generates from protos/gridmesh/v1
 * (package {@code dev.gridmesh.v1}), for calling a gridmesh edge with grpc-java:
 *
 * <ul>
 *   <li>{@link dev.gridmesh.client.Gridmesh#channel}: gRPC over TLS to the edge, with the API
 *       key on every call and a default deadline for unary calls;
 *   <li>{@link dev.gridmesh.client.Structs}: {@code google.protobuf.Struct} from a map and back
 *       (integral numbers stay {@code Long}s);
 *   <li>{@link dev.gridmesh.client.Errors}: what a refused call says, its {@code
 *       google.rpc.BadRequest} detail and its status code's name;
 *   <li>{@link dev.gridmesh.client.Timestamps}: a {@code google.protobuf.Timestamp} of now.
 * </ul>
 */
package dev.gridmesh.client;
