package install

import (
	"io"
	"sync"
)

// Readahead sizing: the decompressor runs at most this far ahead of the
// writes (readaheadChunks × readaheadChunk bytes of buffers, 1 MiB).
const (
	readaheadChunk  = 256 << 10
	readaheadChunks = 4
)

// readahead reads r on a goroutine of its own into a few fixed buffers, so
// that decompressing an artifact (CPU in the reader) overlaps with writing
// its files (CPU in the kernel) instead of taking turns with it: the
// extraction is otherwise one goroutine doing both. Bytes and the error
// that ended r come out in r's order. Close stops the goroutine and waits
// for it: after Close, r is no longer read.
type readahead struct {
	full chan raChunk
	free chan []byte
	done chan struct{}
	wg   sync.WaitGroup

	cur  raChunk // being consumed; cur.buf[off:] is unread
	off  int
	err  error // r's error, returned once cur is consumed
	once sync.Once
}

type raChunk struct {
	buf []byte // nil after the last chunk
	n   int
	err error
}

func newReadahead(r io.Reader) *readahead {
	ra := &readahead{
		full: make(chan raChunk, readaheadChunks),
		free: make(chan []byte, readaheadChunks),
		done: make(chan struct{}),
	}
	for range readaheadChunks {
		ra.free <- make([]byte, readaheadChunk)
	}
	ra.wg.Go(func() { ra.fill(r) })
	return ra
}

// fill runs on its own goroutine: each free buffer is filled (all of it,
// but at r's end) and handed over, until r fails or Close.
func (ra *readahead) fill(r io.Reader) {
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.done:
			return
		}
		n, err := fillBuf(r, buf)
		select {
		case ra.full <- raChunk{buf: buf, n: n, err: err}:
		case <-ra.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// fillBuf reads r until buf is full or r fails, returning r's error as
// it is (io.ReadFull would turn an io.EOF after some bytes into
// io.ErrUnexpectedEOF, which a truncated gzip stream also returns).
func fillBuf(r io.Reader, buf []byte) (int, error) {
	n, empty := 0, 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 {
			if empty++; empty >= 100 {
				return n, io.ErrNoProgress
			}
		}
	}
	return n, nil
}

func (ra *readahead) Read(p []byte) (int, error) {
	for ra.off >= ra.cur.n {
		if ra.err != nil {
			return 0, ra.err
		}
		if ra.cur.buf != nil {
			ra.free <- ra.cur.buf // never blocks: free has room for every buffer
		}
		ra.cur, ra.off = <-ra.full, 0
		ra.err = ra.cur.err
	}
	n := copy(p, ra.cur.buf[ra.off:ra.cur.n])
	ra.off += n
	return n, nil
}

// Close stops the reading goroutine and waits for it to return. It is
// safe to call more than once.
func (ra *readahead) Close() error {
	ra.once.Do(func() { close(ra.done) })
	ra.wg.Wait()
	return nil
}
