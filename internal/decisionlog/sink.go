package decisionlog

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
)

// Writer is a Sink of JSON lines, one record per line, to an io.Writer
// (stdout, a file). Its writes are not cancellable: ctx is not used.
type Writer struct {
	w     *bufio.Writer
	close func() error
}

var _ Sink = (*Writer)(nil)

// NewWriter returns a sink writing JSON lines to w; Close does not close w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 64<<10), close: func() error { return nil }}
}

// OpenFile returns a sink appending JSON lines to the file at path,
// created (0640) when missing. It does not rotate the file: rotate it by
// copy and truncate (logrotate's copytruncate), which appending survives.
func OpenFile(path string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	s := NewWriter(f)
	s.close = f.Close
	return s, nil
}

// Write writes each record as one line, then flushes.
func (s *Writer) Write(_ context.Context, records []*Record) error {
	for _, r := range records {
		b, err := r.MarshalJSON()
		if err != nil {
			return err
		}
		_, _ = s.w.Write(b)
		if err := s.w.WriteByte('\n'); err != nil {
			return err // bufio keeps the first write error
		}
	}
	return s.w.Flush()
}

// Close flushes and closes the file (not an io.Writer given to NewWriter).
func (s *Writer) Close() error {
	err := s.w.Flush()
	if cerr := s.close(); err == nil {
		err = cerr
	}
	return err
}
