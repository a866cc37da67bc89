package gridmesh

import (
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// BadRequest is the google.rpc.BadRequest detail of a failed call's status
// (the edge sends it in the grpc-status-details-bin trailer of an
// INVALID_ARGUMENT, naming the field that was wrong), or nil if it has none.
func BadRequest(err error) *errdetails.BadRequest {
	for _, detail := range status.Convert(err).Details() {
		if badRequest, ok := detail.(*errdetails.BadRequest); ok {
			return badRequest
		}
	}
	return nil
}

// FieldViolations are the field violations of err's BadRequest detail, e.g.
// params.text of a refused SubmitTask; none if it has no such detail.
func FieldViolations(err error) []*errdetails.BadRequest_FieldViolation {
	return BadRequest(err).GetFieldViolations()
}

// CodeName is the gRPC name of err's status code, "INVALID_ARGUMENT" and so
// on, as other gridmesh clients and the docs spell it (codes.Code's String
// says "InvalidArgument"). A nil err is "OK"; an error that is no gRPC status, "UNKNOWN".
func CodeName(err error) string {
	return code.Code(status.Code(err)).String()
}
