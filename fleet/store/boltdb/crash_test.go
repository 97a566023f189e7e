package boltdb

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tender-edge/tender/fleet/store"
	"github.com/tender-edge/tender/fleet/store/storetest"
	"github.com/tender-edge/tender/sync/wire"
)

const crashEnv = "TENDER_FLEETSTORE_CRASH_CHILD"

// frozen stops the store's clock, so that only what was written keeps
// generations from being reissued (not the clock floor).
var frozen = &Options{Now: func() time.Time { return storetest.T0 }}

// TestCrash_KilledMidWrite runs a writer in a child process (this test
// binary again), SIGKILLs it while it issues generations and ingests
// events as fast as it can, and reopens the file: it opens clean, every
// generation the child was given is below the next one issued, and every
// event it was told was stored is there.
func TestCrash_KilledMidWrite(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "fleet.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Store().Devices.Put(ctx, store.Device{ID: "gw-1"}, 0); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrash_KilledMidWrite$")
		cmd.Env = append(os.Environ(), crashEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var lastGen, lastSeq uint64
		sc := bufio.NewScanner(out)
		for n := 0; n < 300 && sc.Scan(); n++ {
			f := strings.Fields(sc.Text())
			if len(f) != 2 {
				t.Fatalf("child said %q", sc.Text())
			}
			v, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "gen":
				lastGen = v
			case "seq":
				lastSeq = v
			}
		}
		_ = cmd.Process.Kill() // mid-write: the child never stops writing
		_ = cmd.Wait()
		if lastGen == 0 || lastSeq == 0 {
			t.Fatalf("round %d: the child reported nothing", round)
		}

		db, err := Open(path, frozen)
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		if err := consistent(db.Bolt()); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		s := db.Store()
		if g, err := s.Generations.Next(ctx, "gw-1"); err != nil || g <= lastGen {
			t.Fatalf("round %d: next generation %d after the child was given %d (%v)", round, g, lastGen, err)
		}
		d, err := s.Devices.Get(ctx, "gw-1")
		if err != nil || d.Status.EventSeq < lastSeq {
			t.Fatalf("round %d: event mark %d, the child stored %d (%v)", round, d.Status.EventSeq, lastSeq, err)
		}
		if err := s.Audit.Verify(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		_ = db.Close()
	}
}

// crashChild writes until it is killed, printing what the store
// confirmed.
func crashChild(path string) {
	db, err := Open(path, frozen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s := db.Store()
	d, err := s.Devices.Get(ctx, "gw-1")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	seq := d.Status.EventSeq
	w := bufio.NewWriter(os.Stdout)
	for {
		g, err := s.Generations.Next(ctx, "gw-1")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintln(w, "gen", g)
		seq++
		if _, err := s.Ingest.Ingest(ctx, store.Batch{Events: []store.Event{{Device: "gw-1", Event: wire.Event{DeviceID: "gw-1", Seq: seq, Kind: wire.EventStarted}}}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if _, err := s.Audit.Append(ctx, store.AuditEntry{Who: "child", Action: "write"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintln(w, "seq", seq)
		_ = w.Flush()
	}
}
