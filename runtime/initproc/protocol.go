package initproc

import "strconv"

// The init may be another program than the runtime that starts it (the
// small init the agent embeds, cmd/tender-init), so the two check that
// they speak the same protocol: the runtime passes ProtocolID as the init's
// os.Args[2], and the init refuses to go on when it differs from its own
// (a blob built from another tree), before it reads the config.
//
// syncProtocol numbers the sync protocol of start_linux.go; change it when
// the steps or their bytes change. configShape is a hash of the shapes of
// Config and ExecConfig (every field's name, JSON tag and kind,
// recursively, as JSON carries them): TestProtocol_ConfigShape fails with
// the new value when they change, so that it is a constant here and the
// init pays nothing for it.
const (
	syncProtocol = 1
	configShape  = "878063a65bd586c6"
)

// ProtocolID names the protocol between the runtime and its init.
func ProtocolID() string { return strconv.Itoa(syncProtocol) + "." + configShape }

// checkProtocol is the init's side: args are its os.Args.
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
