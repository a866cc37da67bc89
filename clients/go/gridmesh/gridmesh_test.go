package gridmesh

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestToMapKeepsIntegersIntegers(t *testing.T) {
	s := MustStruct(map[string]any{
		"name": "Ada", "credit": 42, "ratio": 0.5, "vip": true, "note": nil,
		"tags": []any{"a", 2}, "address": map[string]any{"zip": 10115},
	})
	want := map[string]any{
		"name": "Ada", "credit": int64(42), "ratio": 0.5, "vip": true, "note": nil,
		"tags": []any{"a", int64(2)}, "address": map[string]any{"zip": int64(10115)},
	}
	if got := ToMap(s); !reflect.DeepEqual(got, want) {
		t.Errorf("ToMap = %#v, want %#v", got, want)
	}
	if got := ToMap(nil); len(got) != 0 {
		t.Errorf("ToMap(nil) = %#v, want an empty map", got)
	}
}

func TestMustStructPanicsOnWhatJSONCannotHold(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustStruct took a channel")
		}
	}()
	MustStruct(map[string]any{"c": make(chan int)})
}

func TestBadRequestReadsTheStatusDetails(t *testing.T) {
	violation := &errdetails.BadRequest_FieldViolation{Field: "params.text", Description: "5 is not of type 'string'"}
	st, err := status.New(codes.InvalidArgument, "bad params").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{violation},
	})
	if err != nil {
		t.Fatal(err)
	}
	refused := st.Err()
	if got := FieldViolations(refused); len(got) != 1 || got[0].GetField() != "params.text" {
		t.Errorf("FieldViolations = %v", got)
	}
	if got := CodeName(refused); got != "INVALID_ARGUMENT" {
		t.Errorf("CodeName = %q", got)
	}
	plain := status.Error(codes.NotFound, "no such task")
	if BadRequest(plain) != nil || FieldViolations(plain) != nil || CodeName(plain) != "NOT_FOUND" {
		t.Errorf("a status without details: %v %v %q", BadRequest(plain), FieldViolations(plain), CodeName(plain))
	}
	if CodeName(errors.New("not a status")) != "UNKNOWN" || CodeName(nil) != "OK" {
		t.Error("CodeName of a plain error or nil")
	}
}

func TestAPIKeyIsABearerTokenThatNeedsTLS(t *testing.T) {
	md, err := APIKey("gmk_1_s").GetRequestMetadata(context.Background())
	if err != nil || md["authorization"] != "Bearer gmk_1_s" {
		t.Errorf("GetRequestMetadata = %v, %v", md, err)
	}
	if !APIKey("k").RequireTransportSecurity() {
		t.Error("an API key must not go over plaintext")
	}
}
