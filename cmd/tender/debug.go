package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/containerd/errdefs"
	"github.com/rs/zerolog"
)

// checkDebugAddr accepts only a loopback address for --debug-addr: the
// profiles show the process's memory layout, goroutines and command
// line, and are served without a token.
func checkDebugAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--debug-addr %q: want HOST:PORT on loopback (127.0.0.1:6060): %w", addr, errdefs.ErrInvalidArgument)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--debug-addr %q: only a loopback address (127.0.0.1, ::1, localhost) may serve profiles: %w", addr, errdefs.ErrInvalidArgument)
}

// serveDebug serves Go's profiles (net/http/pprof, /debug/pprof/) on
// addr, plain HTTP, until ctx ends, on a mux of its own (importing
// net/http/pprof also registers them on http.DefaultServeMux, which
// nothing in tender serves).
func serveDebug(ctx context.Context, addr string, log zerolog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // heap, allocs, goroutine, ... by name
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--debug-addr %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Warn().Str("addr", ln.Addr().String()).Msg("debug listener serving profiles (loopback, no token)")
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("debug listener: %w", err)
	}
	return nil
}
