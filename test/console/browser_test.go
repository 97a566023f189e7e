package console

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's chromium (or another Chrome).
func chromiumPath() string {
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// browser is one headless Chromium (its own profile: no cookie shared
// with another browser of the test).
type browser struct {
	t       *testing.T
	ctx     context.Context
	base    string
	dialogs atomic.Int32 // alert(), confirm(), ... that a page opened
}

// newBrowser starts Chromium at 1366x768; the test is skipped only when
// no Chromium can be started at all.
// The fleet's certificates are not in the browser's trust store: it is
// told to accept their public keys (SPKI), so that the page counts as a
// secure context (Secure cookies) without trusting any other bad
// certificate.
func newBrowser(t *testing.T, base string, spki string) *browser {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Skip("no chromium found (apt-get install chromium; `make deps` does): the browser tests need one")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // as root
		chromedp.Flag("ignore-certificate-errors-spki-list", spki),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1366, 768),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t, base: base}
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		switch ev.(type) {
		case *page.EventJavascriptDialogOpening, page.EventJavascriptDialogOpening:
			b.dialogs.Add(1)
			go chromedp.Do(b.ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
				_, err := cdp.Call(ctx, t, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
				return err
			}))
		}
	}))
	b.ctx = ctx
	t.Cleanup(func() { cancelC(); cancelA() })
	// The first Run starts the browser and lives as long as ctx: no
	// timeout on it.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Skipf("chromium %s cannot be started: %v", path, err)
	}
	return b
}

// run runs steps, failing the test on an error.
func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// get runs one action that returns a value.
func get[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// eval evaluates js in the page (awaiting a promise it returns).
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	return get(b, "eval "+js, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

func (b *browser) open(path string) {
	b.t.Helper()
	b.run("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitReady(chromedp.CSS("body")))
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return get(b, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

// count is the integer in the element data-count=NAME (the overview's
// tiles), or -1.
func (b *browser) count(name string) int {
	b.t.Helper()
	return eval[int](b, fmt.Sprintf(`(function(){var e=document.querySelector('[data-count=%q]');return e?parseInt(e.textContent,10):-1})()`, name))
}

// signIn signs in with token through the form.
func (b *browser) signIn(token string) {
	b.t.Helper()
	b.open("/ui/login")
	b.run("sign in",
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("form.login button")))
	b.waitJS("the signed-in page", 30*time.Second, `!!document.querySelector('header nav')`)
}

// screenshot saves the whole page as build/screenshots/NAME.png at the
// given width (768 high for the desktop, 844 for the phone).
func (b *browser) screenshot(name string, width, height int64) {
	b.t.Helper()
	b.run("viewport", chromedp.EmulateViewport(width, height))
	png := get(b, "screenshot "+name, chromedp.FullScreenshot(100))
	dir := filepath.Join("..", "..", "build", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s (%d bytes)", p, len(png))
	b.run("desktop viewport", chromedp.EmulateViewport(1366, 768))
}

// navTiming is the Performance API's record of the last navigation, in
// ms from its start.
type navTiming struct {
	ResponseStart, ResponseEnd, DOMInteractive, DOMContentLoaded, Load float64
	Transfer                                                           float64
}

func (b *browser) timing() navTiming {
	b.t.Helper()
	raw := eval[string](b, `JSON.stringify((function(){var n=performance.getEntriesByType('navigation')[0];return {ResponseStart:n.responseStart,ResponseEnd:n.responseEnd,DOMInteractive:n.domInteractive,DOMContentLoaded:n.domContentLoadedEventEnd,Load:n.loadEventEnd,Transfer:n.transferSize}})())`)
	var nt navTiming
	if err := json.Unmarshal([]byte(raw), &nt); err != nil {
		b.t.Fatal(err)
	}
	return nt
}

func (nt navTiming) String() string {
	return fmt.Sprintf("first byte %.0f ms, last byte %.0f ms, interactive %.0f ms, DOMContentLoaded %.0f ms, load %.0f ms, %.0f KiB",
		nt.ResponseStart, nt.ResponseEnd, nt.DOMInteractive, nt.DOMContentLoaded, nt.Load, nt.Transfer/1024)
}

// waitJS polls a boolean JavaScript expression in the page until it holds.
func (b *browser) waitJS(what string, d time.Duration, js string) {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for {
		if eval[bool](b, js) {
			return
		}
		if time.Now().After(deadline) {
			body := eval[string](b, `document.querySelector('main') ? document.querySelector('main').innerText : document.body.innerText`)
			b.t.Fatalf("timed out waiting for %s; the page shows:\n%s", what, strings.TrimSpace(body))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// spkiList is the base64 sha256 of the public keys of the PEM
// certificates in files, comma-separated, for
// --ignore-certificate-errors-spki-list.
func spkiList(t *testing.T, files ...string) string {
	t.Helper()
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
			out = append(out, base64.StdEncoding.EncodeToString(sum[:]))
		}
	}
	return strings.Join(out, ",")
}

// tabTo presses Tab until the element sel has the keyboard focus (at most
// 60 times, from the top of the page).
func (b *browser) tabTo(sel string) {
	b.t.Helper()
	for range 60 {
		b.run("tab", chromedp.KeyEvent("\t"))
		if eval[bool](b, fmt.Sprintf(`document.activeElement === document.querySelector(%q)`, sel)) {
			return
		}
	}
	b.t.Fatalf("Tab never reaches %s", sel)
}
