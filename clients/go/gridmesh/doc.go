// Package gridmesh has the few helpers a Go program needs around the code buf
// generates from protos/gridmesh/v1 (package gridmeshv1, in ../gen):
//
//   - [Dial]: a gRPC connection to the edge over TLS, trusting a CA file, with
//     an API key on every call ([APIKey]) and a default deadline on unary calls.
//   - [MustStruct] and [ToMap]: google.protobuf.Struct (task params, event
//     payloads) from and to plain Go maps, with integral numbers as int64.
//   - [BadRequest], [FieldViolations] and [CodeName]: what a refused call says,
//     from the google.rpc.BadRequest details of its status.
//
// A Timestamp of now is timestamppb.Now() (google.golang.org/protobuf/types/known/timestamppb),
// and an enum's proto name is its String method: task.State.String() == "QUEUED".
package gridmesh
