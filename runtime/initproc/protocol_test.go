package initproc

import (
	"hash/fnv"
	"reflect"
	"strconv"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// shapeHash hashes the shape of the types of vs: every field's name, JSON
// tag and kind, recursively (a named type once; again by name).
func shapeHash(vs ...any) string {
	h := fnv.New64a()
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		h.Write([]byte(t.Kind().String()))
		if t.Name() != "" {
			if seen[t] {
				h.Write([]byte("=" + t.PkgPath() + "." + t.Name()))
				return
			}
			seen[t] = true
		}
		switch t.Kind() {
		case reflect.Struct:
			h.Write([]byte("{"))
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				h.Write([]byte(f.Name + " " + f.Tag.Get("json") + ":"))
				walk(f.Type)
				h.Write([]byte(";"))
			}
			h.Write([]byte("}"))
		case reflect.Pointer, reflect.Slice, reflect.Array:
			walk(t.Elem())
		case reflect.Map:
			walk(t.Key())
			walk(t.Elem())
		}
	}
	for _, v := range vs {
		walk(reflect.TypeOf(v))
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

// configShape must follow Config and ExecConfig: an init built from a tree
// where they differ must not take this runtime's configs.
func TestProtocol_ConfigShape(t *testing.T) {
	if got := shapeHash(Config{}, ExecConfig{}); got != configShape {
		t.Errorf("Config or ExecConfig changed shape: set configShape to %q in protocol.go", got)
	}
	// The hash sees a change deep inside the spec.
	type spec2 struct {
		Spec *struct{ specs.Spec } `json:"spec"`
	}
	if shapeHash(spec2{}) == shapeHash(struct {
		Spec *specs.Spec `json:"spec"`
	}{}) {
		t.Error("shape hash misses an embedded struct")
	}
	if shapeHash(struct {
		A int `json:"a"`
	}{}) == shapeHash(struct {
		A int `json:"b"`
	}{}) {
		t.Error("shape hash misses a JSON tag")
	}
}
