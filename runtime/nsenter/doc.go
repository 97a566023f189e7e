// Package nsenter reaches into a running container from the host: Dial
// makes a connection from inside its network namespace, Exec runs a command
// inside it with the workload's identity and confinement. Both take the
// container's init pid and its start time (field 22 of /proc/PID/stat), and
// refuse a pid that now belongs to another process.
package nsenter
