package gridmesh

import (
	"math"

	"google.golang.org/protobuf/types/known/structpb"
)

// MustStruct is structpb.NewStruct for maps written in the code, such as a
// task's params: it panics where NewStruct would fail, on a value JSON cannot
// hold (a channel, a struct). Use structpb.NewStruct for maps that come from input.
func MustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

// ToMap is the plain Go map a Struct holds, like s.AsMap(), except that a
// number with no fraction becomes an int64 (42, not 42.0): a Struct keeps
// every number as a double, while JSON users wrote and expect integers.
// A nil Struct gives an empty map.
func ToMap(s *structpb.Struct) map[string]any {
	m := make(map[string]any, len(s.GetFields()))
	for k, v := range s.GetFields() {
		m[k] = toGo(v)
	}
	return m
}

func toGo(v *structpb.Value) any {
	switch kind := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		n := kind.NumberValue
		// Only where a double holds every integer exactly (|n| <= 2^53).
		if n == math.Trunc(n) && math.Abs(n) <= 1<<53 {
			return int64(n)
		}
		return n
	case *structpb.Value_StructValue:
		return ToMap(kind.StructValue)
	case *structpb.Value_ListValue:
		items := make([]any, len(kind.ListValue.GetValues()))
		for i, item := range kind.ListValue.GetValues() {
			items[i] = toGo(item)
		}
		return items
	default: // null, string, bool
		return v.AsInterface()
	}
}
