package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"filippo.io/age"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
)

// ageRole says what a command does with the archive, which decides the age
// keys it needs.
type ageRole int

const (
	// ageReader commands (list, verify, binlog fetch, restore) only read:
	// they need --age-identity for an encrypted archive; recipients are
	// not used.
	ageReader ageRole = iota
	// ageWriter commands (agent, snapshot) write: they need the public
	// --age-recipient keys and no identity.
	ageWriter
	// ageReadWriter commands (prune, drill) read, and write a few records: they
	// need --age-identity, and encrypt what they write for --age-recipient,
	// or for the identities' own public keys when none is given.
	ageReadWriter
)

// ageFlags are the archive's age keys. Registered with the storage flags;
// storageFlags.open wraps the backend with them.
type ageFlags struct {
	recipients     listFlag
	recipientsFile string
	identities     listFlag

	// role and log are set by the command before open.
	role ageRole
	log  *slog.Logger
}

// listFlag is a repeatable flag; one value may also hold several, separated
// by commas (as a MYSQL_PITR_* variable must).
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for part := range strings.SplitSeq(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

func (a *ageFlags) register(fs *flag.FlagSet) {
	fs.Var(&a.recipients, "age-recipient", "encrypt what this command writes for this age public key (age1…); repeatable, or comma-separated. "+
		"Writers (agent, snapshot) need only this, never an identity")
	fs.StringVar(&a.recipientsFile, "age-recipients-file", "", "file of age public keys to encrypt for, one per line (# comments allowed)")
	fs.Var(&a.identities, "age-identity", "age identity file (AGE-SECRET-KEY-1… lines, as age-keygen writes) to decrypt the archive with; "+
		"repeatable: every key given is tried, e.g. the old and the new one across a rotation. Readers (restore, verify, list, binlog fetch, prune, drill) need it")
}

// given reports whether any age flag was given.
func (a *ageFlags) given() bool {
	return len(a.recipients) > 0 || a.recipientsFile != "" || len(a.identities) > 0
}

// hasRecipients reports whether public keys were given.
func (a *ageFlags) hasRecipients() bool { return len(a.recipients) > 0 || a.recipientsFile != "" }

func (a *ageFlags) logger() *slog.Logger {
	if a.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.log
}

// parse reads and checks the keys. Errors are usage errors and never echo
// a key or a file's content: a secret key pasted where a public one belongs
// must not end up in a log.
func (a *ageFlags) parse() (recipients []age.Recipient, identities []age.Identity, err error) {
	for i, r := range a.recipients {
		rs, err := age.ParseRecipients(strings.NewReader(r))
		if err != nil {
			hint := "an age public key starts with age1"
			if strings.HasPrefix(strings.ToUpper(r), "AGE-SECRET-KEY-") {
				hint = "that is a secret key: give its public key (age-keygen -y FILE), and the key file to --age-identity where the archive is read"
			}
			return nil, nil, usageError{fmt.Errorf("--age-recipient (value %d): not an age public key: %s", i+1, hint)}
		}
		recipients = append(recipients, rs...)
	}
	if a.recipientsFile != "" {
		f, err := os.Open(a.recipientsFile)
		if err != nil {
			return nil, nil, usageError{fmt.Errorf("--age-recipients-file: %w", err)}
		}
		rs, err := age.ParseRecipients(f)
		f.Close()
		if err != nil {
			return nil, nil, usageError{fmt.Errorf("--age-recipients-file %s: not a file of age public keys (age1… lines; "+
				"an identity file goes to --age-identity): %v", a.recipientsFile, err)}
		}
		recipients = append(recipients, rs...)
	}
	for _, path := range a.identities {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, usageError{fmt.Errorf("--age-identity: %w", err)}
		}
		// Group access is how a pod reads a mounted Secret (fsGroup);
		// access for everyone is a mistake.
		if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o007 != 0 {
			a.logger().Warn("age identity file is accessible to every user; it decrypts the whole archive", "file", path, "mode", fi.Mode().Perm().String())
		}
		ids, err := age.ParseIdentities(f)
		f.Close()
		if err != nil {
			// age's parse errors name a line number, never its content.
			return nil, nil, usageError{fmt.Errorf("--age-identity %s: not an age identity file (AGE-SECRET-KEY-1… lines, as age-keygen writes): %v", path, err)}
		}
		identities = append(identities, ids...)
	}
	return recipients, identities, nil
}

// ownRecipients returns the public keys of identities, for a command that
// was given identities only and writes.
func ownRecipients(ids []age.Identity) ([]age.Recipient, error) {
	var rs []age.Recipient
	for _, id := range ids {
		switch id := id.(type) {
		case *age.X25519Identity:
			rs = append(rs, id.Recipient())
		case *age.HybridIdentity:
			rs = append(rs, id.Recipient())
		default:
			return nil, usageError{errors.New("cannot derive a public key from an --age-identity; give --age-recipient")}
		}
	}
	return rs, nil
}

// wrap puts the age layer over the backend. Without any age flag it still
// wraps: an encrypted archive then fails with a clear error instead of
// handing ciphertext to a JSON or zstd decoder, and a writer refuses to add
// plaintext to an encrypted archive.
func (a *ageFlags) wrap(ctx context.Context, backend storage.Storage) (storage.Storage, error) {
	recipients, identities, err := a.parse()
	if err != nil {
		return nil, err
	}
	var opts crypt.Options
	switch a.role {
	case ageReader:
		opts.Identities = identities
	case ageWriter:
		if len(recipients) == 0 && len(identities) > 0 {
			a.logger().Warn("--age-identity given to a command that writes, without --age-recipient: encrypting for the identities' own public keys; " +
				"a writer needs only the public keys (--age-recipient), keep identities where the archive is read")
			if recipients, err = ownRecipients(identities); err != nil {
				return nil, err
			}
		}
		opts.Recipients, opts.Identities = recipients, identities
	case ageReadWriter:
		if len(recipients) == 0 && len(identities) > 0 {
			if recipients, err = ownRecipients(identities); err != nil {
				return nil, err
			}
		}
		opts.Recipients, opts.Identities = recipients, identities
	}
	st, err := crypt.New(backend, opts)
	if err != nil {
		return nil, usageError{err}
	}
	if a.role == ageWriter {
		if err := checkArchiveEncryption(ctx, st); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// checkArchiveEncryption refuses a writer whose keys do not match the
// archive: encryption covers whole archives, because a reader with
// identities refuses every plaintext object. It reads the first bytes of
// the newest timeline or index record, or of a manifest: no identity needed.
func checkArchiveEncryption(ctx context.Context, st *crypt.Storage) error {
	key, err := sampleKey(ctx, st)
	if err != nil || key == "" {
		return err
	}
	enc, err := crypt.IsEncrypted(ctx, st, key)
	if err != nil {
		return err
	}
	switch {
	case enc && !st.Encrypts():
		return usageError{fmt.Errorf("--storage holds an encrypted archive (%s is an age file): give its public key with --age-recipient "+
			"or --age-recipients-file, so that what this command writes is encrypted too", key)}
	case !enc && st.Encrypts():
		return usageError{fmt.Errorf("--storage holds an unencrypted archive (%s is plaintext) and encryption covers whole archives: "+
			"start the encrypted archive at a new --storage location, or drop the age flags", key)}
	}
	return nil
}

// sampleKey returns an object of the archive that tells whether it is
// encrypted, or "" for an empty archive.
func sampleKey(ctx context.Context, st storage.Storage) (string, error) {
	refs, err := catalog.LoadTailRefs(ctx, st)
	if err != nil {
		return "", err
	}
	switch {
	case refs.HasRecord:
		return catalog.TimelineRecordKey(refs.Newest, refs.RecordGen), nil
	case refs.Last != nil:
		return refs.Last.RecordKey(), nil
	}
	objs, err := st.List(ctx, catalog.SnapshotPrefix)
	if err != nil {
		return "", fmt.Errorf("list %s: %w", catalog.SnapshotPrefix, err)
	}
	for _, o := range objs {
		if strings.HasSuffix(o.Key, "/manifest.json") {
			return o.Key, nil
		}
	}
	return "", nil
}
