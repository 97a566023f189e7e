package initproc

import (
	"hash/fnv"
	"reflect"
	"strconv"
	"sync"
)

// The init may be another program than the runtime that starts it (the
// small init the agent embeds, cmd/tender-init), so the two check that
// they speak the same protocol: the runtime passes ProtocolID as the init's
// os.Args[2], and the init refuses to go on when it differs from its own
// (a blob built from another tree), before it reads the config.
//
// syncProtocol numbers the sync protocol of start_linux.go; change it when
// the steps or their bytes change. The configs' shapes count by
// themselves.
const syncProtocol = 1

var protocolOnce struct {
	sync.Once
	id string
}

// ProtocolID names the protocol between the runtime and its init: the sync
// protocol's number and a hash of the shapes of Config and ExecConfig (the
// names, JSON tags and kinds of every field, recursively), as JSON carries
// them.
func ProtocolID() string {
	protocolOnce.Do(func() {
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
		walk(reflect.TypeOf(Config{}))
		walk(reflect.TypeOf(ExecConfig{}))
		protocolOnce.id = strconv.Itoa(syncProtocol) + "." + strconv.FormatUint(h.Sum64(), 16)
	})
	return protocolOnce.id
}

// checkProtocol is the init's side: got is what the runtime passed.
func checkProtocol(args []string) error {
	got := ""
	if len(args) > 2 {
		got = args[2]
	}
	if got != ProtocolID() {
		return &protocolError{got: got, want: ProtocolID()}
	}
	return nil
}

type protocolError struct{ got, want string }

func (e *protocolError) Error() string {
	return "the runtime speaks init protocol " + strconv.Quote(e.got) + ", this init " + strconv.Quote(e.want) +
		": the init was built from another source tree than the runtime (rebuild both: make build)"
}
