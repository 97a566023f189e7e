// Command workload is the test image's only program: a static binary whose
// subcommands exercise what a container runtime must get right (exit codes,
// identity, capabilities, descriptors, memory, CPU and pid limits, health
// endpoints). It is built into build/testimage.tar by `make testimage`.
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const usage = `usage: workload COMMAND [ARGS]
  exit N          exit with status N
  sleep SECONDS   sleep (SIGTERM ends it with status 0)
  alloc MIB       allocate and touch MIB MiB, print "allocated N"
  spin SECONDS    burn one CPU, print iterations
  forks N         start N sleeping children, print "started N"
  serve ADDR      HTTP server; /healthz answers 200
  env             print the environment
  id              print uid, gid, hostname, pid
  caps            print the effective capability set as hex
  fds             print open descriptor numbers
  mounts          print /proc/self/mounts
  cat PATH        print a file
  write PATH TEXT write TEXT to PATH
  echo TEXT...    print TEXT
  clone3          call clone3(2) with no arguments, print the errno's name
  get URL         print the body of an HTTP GET of URL (3s timeout)
  ticks SECONDS   print "tick" every 10ms for SECONDS seconds, then "done"
  swap A B SECS   exchange paths A and B (renameat2 RENAME_EXCHANGE) in a
                  tight loop for SECS seconds, print the count (race tests)`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(1)
	}
}

func run(cmd string, args []string) error {
	switch cmd {
	case "exit":
		n, err := intArg(args, 0)
		if err != nil {
			return err
		}
		os.Exit(n)
	case "sleep":
		return sleep(args)
	case "ticks":
		return ticks(args)
	case "clone3":
		// With a NULL clone_args the kernel answers EFAULT or EINVAL; a
		// seccomp filter that denies clone3 answers first.
		_, _, e := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
		fmt.Println(unix.ErrnoName(e))
	case "alloc":
		return alloc(args)
	case "spin":
		return spin(args)
	case "forks":
		return forks(args)
	case "serve":
		if len(args) < 1 {
			return fmt.Errorf("serve: need ADDR")
		}
		return serve(args[0])
	case "get":
		if len(args) < 1 {
			return fmt.Errorf("get: need URL")
		}
		return get(args[0])
	case "env":
		for _, e := range os.Environ() {
			fmt.Println(e)
		}
	case "id":
		host, _ := os.Hostname()
		fmt.Printf("uid=%d gid=%d hostname=%s pid=%d\n", os.Getuid(), os.Getgid(), host, os.Getpid())
	case "caps":
		return caps()
	case "fds":
		return fds()
	case "mounts":
		return cat("/proc/self/mounts")
	case "cat":
		if len(args) < 1 {
			return fmt.Errorf("cat: need PATH")
		}
		return cat(args[0])
	case "write":
		if len(args) < 2 {
			return fmt.Errorf("write: need PATH TEXT")
		}
		return os.WriteFile(args[0], []byte(strings.Join(args[1:], " ")), 0o644)
	case "swap":
		if len(args) < 3 {
			return fmt.Errorf("swap: need A B SECONDS")
		}
		return swap(args[0], args[1], args[2])
	case "echo":
		fmt.Println(strings.Join(args, " "))
	case "child-sleep": // used by forks
		time.Sleep(time.Hour)
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
	return nil
}

func intArg(args []string, i int) (int, error) {
	if len(args) <= i {
		return 0, fmt.Errorf("missing numeric argument")
	}
	n, err := strconv.Atoi(args[i])
	if err != nil {
		return 0, fmt.Errorf("bad number %q", args[i])
	}
	return n, nil
}

func sleep(args []string) error {
	secs, err := strconv.ParseFloat(strings.Join(args, ""), 64)
	if err != nil {
		return fmt.Errorf("sleep: bad seconds %q", strings.Join(args, " "))
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-time.After(time.Duration(secs * float64(time.Second))):
	case s := <-term:
		fmt.Println("got", s)
	}
	return nil
}

// ticks writes on and on, ignoring write errors (a reader that went away),
// so that a test can close the output pipe of the CLI while it runs.
func ticks(args []string) error {
	secs, err := strconv.ParseFloat(strings.Join(args, ""), 64)
	if err != nil {
		return fmt.Errorf("ticks: bad seconds %q", strings.Join(args, " "))
	}
	end := time.Now().Add(time.Duration(secs * float64(time.Second)))
	for time.Now().Before(end) {
		fmt.Println("tick")
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("done")
	return nil
}

func alloc(args []string) error {
	mib, err := intArg(args, 0)
	if err != nil {
		return err
	}
	chunks := make([][]byte, 0, mib)
	for i := 0; i < mib; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		chunks = append(chunks, b)
	}
	fmt.Printf("allocated %d\n", len(chunks))
	return nil
}

func spin(args []string) error {
	secs, err := intArg(args, 0)
	if err != nil {
		return err
	}
	end := time.Now().Add(time.Duration(secs) * time.Second)
	var n uint64
	for time.Now().Before(end) {
		for i := 0; i < 100000; i++ {
			n++
		}
	}
	fmt.Printf("iterations %d\n", n)
	return nil
}

func forks(args []string) error {
	n, err := intArg(args, 0)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		self = "/workload"
	}
	started := 0
	var cmds []*exec.Cmd
	for i := 0; i < n; i++ {
		c := exec.Command(self, "child-sleep")
		if err := c.Start(); err != nil {
			break
		}
		cmds = append(cmds, c)
		started++
	}
	fmt.Printf("started %d\n", started)
	for _, c := range cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	return nil
}

func serve(addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// /zero/N answers N MiB of zeros (throughput benchmarks).
	mux.HandleFunc("/zero/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n<<20))
		buf := make([]byte, 1<<20)
		for i := 0; i < n; i++ {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		host, _ := os.Hostname()
		fmt.Fprintf(w, "hello from %s\n", host)
	})
	fmt.Println("serving", addr)
	return http.ListenAndServe(addr, mux)
}

// get prints the body of an HTTP GET of url; a refused or unreachable
// address fails within 3 seconds.
func get(url string) error {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}

func caps() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			fmt.Println(strings.TrimSpace(v))
			return nil
		}
	}
	return fmt.Errorf("caps: no CapEff in /proc/self/status")
}

func fds() error {
	// Raw syscalls: os.ReadDir would set up the runtime's poller and so
	// open descriptors of its own.
	dir, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /proc/self/fd: %w", err)
	}
	defer syscall.Close(dir)
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := syscall.ReadDirent(dir, buf)
		if err != nil {
			return fmt.Errorf("read /proc/self/fd: %w", err)
		}
		if n == 0 {
			break
		}
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
	}
	var nums []int
	for _, name := range names {
		if n, err := strconv.Atoi(name); err == nil && n != dir {
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	s := make([]string, len(nums))
	for i, n := range nums {
		s[i] = strconv.Itoa(n)
	}
	fmt.Println(strings.Join(s, " "))
	return nil
}

func cat(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(b)
	return err
}

// swap exchanges two paths atomically, over and over: the racer of the
// CVE-2021-30465 class of tests (a directory and a symlink trading places
// while a runtime mounts onto one of them).
func swap(a, b, secs string) error {
	d, err := strconv.ParseFloat(secs, 64)
	if err != nil {
		return fmt.Errorf("swap: bad seconds %q", secs)
	}
	end := time.Now().Add(time.Duration(d * float64(time.Second)))
	n := 0
	for time.Now().Before(end) {
		if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
			return fmt.Errorf("swap: %w", err)
		}
		n++
	}
	fmt.Printf("swapped %d\n", n)
	return nil
}
