// Command pushimage pushes an OCI image archive (build/testimage.tar) to a
// registry with go-containerregistry, for the pull benchmark:
//
//	pushimage [-insecure] [-user U -password P] ARCHIVE HOST/REPO:TAG
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tender-edge/tender/test/registry"
)

func main() {
	insecure := flag.Bool("insecure", false, "plain HTTP")
	user := flag.String("user", "", "basic auth user")
	password := flag.String("password", "", "basic auth password")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: pushimage [-insecure] [-user U -password P] ARCHIVE HOST/REPO:TAG")
		os.Exit(2)
	}
	archive, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushimage:", err)
		os.Exit(1)
	}
	var opts []remote.Option
	if *user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: *user, Password: *password}))
	}
	if err := registry.Push(context.Background(), archive, flag.Arg(1), *insecure, opts...); err != nil {
		fmt.Fprintln(os.Stderr, "pushimage:", err)
		os.Exit(1)
	}
}
