package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// ErrReadOnly is returned (wrapped) by Put and Delete of a store opened
// read-only.
var ErrReadOnly = errors.New("storage is opened read-only")

// ReadOnly returns st restricted to reading: Put and Delete fail with an
// error wrapping ErrReadOnly. Commands that only read an archive open it
// so, and so provably write nothing.
func ReadOnly(st Storage) Storage { return readOnly{st} }

type readOnly struct{ Storage }

func (r readOnly) Put(_ context.Context, key string, _ io.Reader, _ PutOptions) (ObjectInfo, error) {
	return ObjectInfo{}, fmt.Errorf("put %s: %w", key, ErrReadOnly)
}

func (r readOnly) Delete(_ context.Context, key string) error {
	return fmt.Errorf("delete %s: %w", key, ErrReadOnly)
}
