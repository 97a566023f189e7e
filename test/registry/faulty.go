package registry

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

var blobPathRe = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)

// Faulty is an HTTP handler in front of a registry handler. It serves blob
// GETs itself (it implements Range) and can cut connections mid-blob, flip
// a byte, ignore Range, or hold a download after some bytes. Faults apply
// only to blobs of at least MinSize bytes (layers, not configs). It counts
// GETs per blob and the blob bytes it served. Set fields before serving;
// the counters are read with the methods.
type Faulty struct {
	Inner   http.Handler
	MinSize int
	// CutAfter: each entry cuts one blob response after that many bytes
	// of the response body, in order, then responses are whole again.
	CutAfter []int
	// Flip flips one byte in the middle of every served blob.
	Flip bool
	// IgnoreRange answers 200 with the whole blob to Range requests.
	IgnoreRange bool
	// HoldAfter, when > 0, makes the first blob response stop after that
	// many bytes and wait until the client goes away; Held is closed once
	// those bytes were written and flushed.
	HoldAfter int
	Held      chan struct{}
	// Gate, when set, makes blob responses wait until it is closed;
	// Gated is closed when the first such response starts waiting.
	Gate  chan struct{}
	Gated chan struct{}

	mu       sync.Mutex
	perReq   map[string][]int64 // bytes served per GET, by blob
	gets     map[string]int
	ranges   int
	served   int64
	heldOnce bool
}

// Gets returns the number of GETs of the blob d.
func (f *Faulty) Gets(d string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets[d]
}

// Served returns the blob bytes written to clients (faulty blobs only).
func (f *Faulty) Served() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served
}

// PerRequest returns the bytes served by each GET of blob d, in order
// (faulty blobs only).
func (f *Faulty) PerRequest(d string) []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.perReq[d]...)
}

// Ranges returns how many blob GETs carried a Range header.
func (f *Faulty) Ranges() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ranges
}

func (f *Faulty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := blobPathRe.FindStringSubmatch(r.URL.Path)
	if r.Method != http.MethodGet || m == nil {
		f.Inner.ServeHTTP(w, r)
		return
	}
	rng := r.Header.Get("Range")
	f.mu.Lock()
	if f.gets == nil {
		f.gets = map[string]int{}
	}
	f.gets[m[1]]++
	if rng != "" {
		f.ranges++
	}
	f.mu.Unlock()

	r2 := r.Clone(r.Context())
	r2.Header.Del("Range")
	rec := httptest.NewRecorder()
	f.Inner.ServeHTTP(rec, r2)
	body := rec.Body.Bytes()
	if rec.Code != http.StatusOK || len(body) < f.MinSize {
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
		return
	}
	if f.Flip {
		body = append([]byte(nil), body...)
		body[len(body)/2] ^= 0x40
	}
	status, start := http.StatusOK, 0
	if from, ok := strings.CutPrefix(rng, "bytes="); ok && !f.IgnoreRange {
		if n, err := strconv.Atoi(strings.TrimSuffix(from, "-")); err == nil && n < len(body) {
			status, start = http.StatusPartialContent, n
			w.Header().Set("Content-Range", "bytes "+strconv.Itoa(n)+"-"+strconv.Itoa(len(body)-1)+"/"+strconv.Itoa(len(body)))
		}
	}
	if f.Gate != nil {
		f.mu.Lock()
		if f.Gated != nil {
			close(f.Gated)
			f.Gated = nil
		}
		f.mu.Unlock()
		<-f.Gate
	}
	data := body[start:]
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)

	f.mu.Lock()
	cut := -1
	if len(f.CutAfter) > 0 {
		cut, f.CutAfter = f.CutAfter[0], f.CutAfter[1:]
	}
	hold := f.HoldAfter > 0 && !f.heldOnce
	if hold {
		f.heldOnce = true
	}
	if f.perReq == nil {
		f.perReq = map[string][]int64{}
	}
	idx := len(f.perReq[m[1]])
	f.perReq[m[1]] = append(f.perReq[m[1]], 0)
	f.mu.Unlock()
	write := func(b []byte) {
		n, _ := w.Write(b)
		f.mu.Lock()
		f.served += int64(n)
		f.perReq[m[1]][idx] += int64(n)
		f.mu.Unlock()
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	switch {
	case hold && f.HoldAfter < len(data):
		write(data[:f.HoldAfter])
		close(f.Held)
		<-r.Context().Done()
		panic(http.ErrAbortHandler)
	case cut >= 0 && cut < len(data):
		write(data[:cut])
		panic(http.ErrAbortHandler) // drops the connection mid-body
	}
	write(data)
}
