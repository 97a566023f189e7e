package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/tender-edge/tender/internal/quantity"
	"github.com/tender-edge/tender/internal/termsafe"
	"github.com/tender-edge/tender/runtime/container"
	"github.com/tender-edge/tender/runtime/image"
)

const defaultAgentConfig = "/etc/tender/agent.yaml"

func (c *cli) pullCmd() *cobra.Command {
	var cfgPath, platform string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "pull [OPTIONS] IMAGE",
		Short: "Pull an image from a registry",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.pull(cmd.Context(), args[0], cfgPath, platform, quiet)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfgPath, "config", defaultAgentConfig, "agent config file with a registries: section (ignored if missing)")
	fs.StringVar(&platform, "platform", "", "platform to pull from a multi-arch image, e.g. linux/arm64 or linux/arm/v7 (default: this machine)")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print only the image digest")
	return cmd
}

func (c *cli) pull(ctx context.Context, ref, cfgPath, platform string, quiet bool) error {
	cfg, err := image.LoadRegistryConfig(cfgPath)
	if err != nil {
		return invalid(err)
	}
	opts := image.PullOptions{Registries: cfg}
	if platform != "" {
		p, err := parsePlatform(platform)
		if err != nil {
			return err
		}
		opts.Platform = &p
	}
	var pr *pullProgress
	if !quiet {
		pr = newPullProgress(c.stderr)
		opts.Progress = pr.event
	}
	st, err := c.openImages()
	if err != nil {
		return err
	}
	defer st.Close()
	img, err := st.Pull(ctx, ref, opts)
	if pr != nil {
		pr.finish()
	}
	if err != nil {
		return err
	}
	if quiet {
		fmt.Fprintln(c.out, img.Digest)
		return nil
	}
	name := img.Name
	if name == "" {
		name = ref
	}
	fmt.Fprintf(c.out, "Pulled image: %s\nDigest: %s\n", termsafe.Escape(name), img.Digest)
	return nil
}

func parsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] != "linux" || parts[1] == "" {
		return ocispec.Platform{}, fmt.Errorf("--platform %q: want linux/ARCH[/VARIANT]: %w", s, errdefs.ErrInvalidArgument)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

func (c *cli) saveCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "save [OPTIONS] IMAGE [FILE]",
		Short: "Save an image to an OCI archive",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := out
			if path == "" && len(args) > 1 {
				path = args[1]
			}
			if path == "" {
				return usageError{Err: errors.New("save needs an output FILE (or -o -)"), Path: cmd.CommandPath()}
			}
			return c.save(cmd.Context(), args[0], path)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of the argument (- for standard output)")
	return cmd
}

func (c *cli) save(ctx context.Context, ref, path string) error {
	st, err := c.openImages()
	if err != nil {
		return err
	}
	defer st.Close()
	if path == "-" {
		return st.Save(ctx, ref, c.stdout)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := st.Save(ctx, ref, f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func (c *cli) imagesPruneCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "prune",
		Short: "Remove the images no container uses",
		Args:  noArgs,
		RunE:  func(*cobra.Command, []string) error { return c.imagesPrune() },
	}
}

func (c *cli) imagesPrune() error {
	st, users, err := c.imagesInUse()
	if err != nil {
		return err
	}
	defer st.Close()
	keep := map[digest.Digest]bool{}
	for id := range users {
		keep[digest.Digest(id)] = true
	}
	removed, freed, err := st.Prune(keep)
	for _, img := range removed {
		name := img.Name
		if name == "" {
			name = img.Digest.String()
		}
		fmt.Fprintln(c.out, "Deleted:", termsafe.Escape(name))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "Total reclaimed space: %s\n", quantity.DisplayBytes(freed))
	return nil
}

// usersByImage maps image IDs (config digests) to the names of the
// containers using them, for the IN USE column of `images`.
func usersByImage(ctrs []*container.Container) map[string][]string {
	out := map[string][]string{}
	for _, ctr := range ctrs {
		out[ctr.ImageID] = append(out[ctr.ImageID], ctr.Name)
	}
	return out
}

// pullProgress shows a pull's progress: a redrawn bar on a terminal,
// plain lines otherwise.
type pullProgress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	blobs map[digest.Digest]*[2]int64 // current, total
	order []digest.Digest
	said  map[digest.Digest]bool // "resuming" printed
	last  time.Time
	drawn bool
	total int64 // layer bytes of the image, from the resolved event
}

func newPullProgress(w io.Writer) *pullProgress {
	p := &pullProgress{w: w, blobs: map[digest.Digest]*[2]int64{}, said: map[digest.Digest]bool{}}
	p.tty = termsafe.Terminal(w)
	return p
}

func short(d digest.Digest) string {
	h := d.Encoded()
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

func (p *pullProgress) event(ev image.ProgressEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Kind {
	case image.ProgressDownload, image.ProgressDownloaded, image.ProgressCached:
		b, ok := p.blobs[ev.Digest]
		if !ok {
			b = &[2]int64{}
			p.blobs[ev.Digest] = b
			p.order = append(p.order, ev.Digest)
		}
		b[0], b[1] = ev.Current, ev.Total
	}
	if ev.Kind == image.ProgressResolved {
		p.total = ev.Total
	}
	if p.tty {
		p.drawTTY(ev)
		return
	}
	switch ev.Kind {
	case image.ProgressResolved:
		fmt.Fprintf(p.w, "Resolved %s (%s)\n", ev.Digest, termsafe.Escape(ev.Message))
	case image.ProgressCached:
		fmt.Fprintf(p.w, "%s: already present\n", short(ev.Digest))
	case image.ProgressDownload:
		if ev.Resumed > 0 && !p.said[ev.Digest] {
			fmt.Fprintf(p.w, "%s: resuming at %s of %s\n", short(ev.Digest), quantity.DisplayBytes(ev.Resumed), quantity.DisplayBytes(ev.Total))
			p.said[ev.Digest] = true
		}
	case image.ProgressRetry:
		fmt.Fprintf(p.w, "%s: retrying at %s of %s: %s\n", short(ev.Digest), quantity.DisplayBytes(ev.Current), quantity.DisplayBytes(ev.Total), termsafe.Escape(ev.Message))
	case image.ProgressDownloaded:
		fmt.Fprintf(p.w, "%s: downloaded %s\n", short(ev.Digest), quantity.DisplayBytes(ev.Total))
	case image.ProgressUnpack:
		fmt.Fprintln(p.w, "Unpacking")
	case image.ProgressDone:
		fmt.Fprintf(p.w, "Stored %s\n", ev.Digest)
	}
}

func (p *pullProgress) drawTTY(ev image.ProgressEvent) {
	now := time.Now()
	if ev.Kind == image.ProgressDownload && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	var cur, total int64
	done := 0
	for _, d := range p.order {
		b := p.blobs[d]
		cur += b[0]
		total += b[1]
		if b[0] == b[1] {
			done++
		}
	}
	total = max(total, p.total)
	const width = 30
	fill := 0
	if total > 0 {
		fill = int(cur * width / total)
	}
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	state := "Downloading"
	switch ev.Kind {
	case image.ProgressUnpack:
		state = "Unpacking"
	case image.ProgressDone:
		state = "Done"
	case image.ProgressResolved:
		state = "Resolved"
	}
	fmt.Fprintf(p.w, "\r\x1b[K%-11s [%s] %s / %s  %d layers done", state, bar, quantity.DisplayBytes(cur), quantity.DisplayBytes(total), done)
	p.drawn = true
}

func (p *pullProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
	}
}
