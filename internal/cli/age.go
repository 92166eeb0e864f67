package cli

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

// ageFlags are the archive's age keys. Registered with the storage flags;
// StorageFlags.Open wraps the backend with them.
type ageFlags struct {
	recipients     ListFlag
	recipientsFile string
	identities     ListFlag
}

func (a *ageFlags) register(fs *flag.FlagSet) {
	fs.Var(&a.recipients, "age-recipient", "encrypt what this command writes for this age public key (age1…); repeatable, or comma-separated. "+
		"Writers (agent, snapshot) need only this, never an identity")
	fs.StringVar(&a.recipientsFile, "age-recipients-file", "", "file of age public keys to encrypt for, one per line (# comments allowed)")
	fs.Var(&a.identities, "age-identity", "age identity file (AGE-SECRET-KEY-1… lines, as age-keygen writes) to decrypt the archive with; "+
		"repeatable: every key given is tried, e.g. the old and the new one across a rotation. Readers (restore, verify, list, binlog fetch, prune, drill) need it")
}

// parse reads and checks the keys. Errors are usage errors and never echo
// a key or a file's content: a secret key pasted where a public one belongs
// must not end up in a log.
func (a *ageFlags) parse(logger *slog.Logger) (recipients []age.Recipient, identities []age.Identity, err error) {
	for i, r := range a.recipients {
		rs, err := age.ParseRecipients(strings.NewReader(r))
		if err != nil {
			hint := "an age public key starts with age1"
			if strings.HasPrefix(strings.ToUpper(r), "AGE-SECRET-KEY-") {
				hint = "that is a secret key: give its public key (age-keygen -y FILE), and the key file to --age-identity where the archive is read"
			}
			return nil, nil, Usage(fmt.Errorf("--age-recipient (value %d): not an age public key: %s", i+1, hint))
		}
		recipients = append(recipients, rs...)
	}
	if a.recipientsFile != "" {
		rs, err := parseRecipientsFile(a.recipientsFile)
		if err != nil {
			return nil, nil, err
		}
		recipients = append(recipients, rs...)
	}
	for _, path := range a.identities {
		ids, err := parseIdentityFile(path, logger)
		if err != nil {
			return nil, nil, err
		}
		identities = append(identities, ids...)
	}
	return recipients, identities, nil
}

// parseRecipientsFile reads --age-recipients-file.
func parseRecipientsFile(path string) ([]age.Recipient, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Usage(fmt.Errorf("--age-recipients-file: %w", err))
	}
	defer f.Close()
	rs, err := age.ParseRecipients(f)
	if err != nil {
		return nil, Usage(fmt.Errorf("--age-recipients-file %s: not a file of age public keys (age1… lines; "+
			"an identity file goes to --age-identity): %v", path, err))
	}
	return rs, nil
}

// parseIdentityFile reads one --age-identity file.
func parseIdentityFile(path string, logger *slog.Logger) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Usage(fmt.Errorf("--age-identity: %w", err))
	}
	defer f.Close()
	// Group access is how a pod reads a mounted Secret (fsGroup); access
	// for everyone is a mistake.
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o007 != 0 {
		logger.Warn("age identity file is accessible to every user; it decrypts the whole archive", "file", path, "mode", fi.Mode().Perm().String())
	}
	ids, err := age.ParseIdentities(f)
	if err != nil {
		// age's parse errors name a line number, never its content.
		return nil, Usage(fmt.Errorf("--age-identity %s: not an age identity file (AGE-SECRET-KEY-1… lines, as age-keygen writes): %v", path, err))
	}
	return ids, nil
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
			return nil, Usage(errors.New("cannot derive a public key from an --age-identity; give --age-recipient"))
		}
	}
	return rs, nil
}

// wrap puts the age layer over the backend, with the keys access needs.
// Without any age flag it still wraps: an encrypted archive then fails with
// a clear error instead of handing ciphertext to a JSON or zstd decoder,
// and a writer refuses to add plaintext to an encrypted archive.
func (a *ageFlags) wrap(ctx context.Context, backend storage.Storage, access Access, logger *slog.Logger) (storage.Storage, error) {
	recipients, identities, err := a.parse(logger)
	if err != nil {
		return nil, err
	}
	opts := crypt.Options{Identities: identities}
	if access != Read {
		if len(recipients) == 0 && len(identities) > 0 {
			if access == Write {
				logger.Warn("--age-identity given to a command that writes, without --age-recipient: encrypting for the identities' own public keys; " +
					"a writer needs only the public keys (--age-recipient), keep identities where the archive is read")
			}
			if recipients, err = ownRecipients(identities); err != nil {
				return nil, err
			}
		}
		opts.Recipients = recipients
	}
	st, err := crypt.New(backend, opts)
	if err != nil {
		return nil, Usage(err)
	}
	if access == Write {
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
		return Usage(fmt.Errorf("--storage holds an encrypted archive (%s is an age file): give its public key with --age-recipient "+
			"or --age-recipients-file, so that what this command writes is encrypted too", key))
	case !enc && st.Encrypts():
		return Usage(fmt.Errorf("--storage holds an unencrypted archive (%s is plaintext) and encryption covers whole archives: "+
			"start the encrypted archive at a new --storage location, or drop the age flags", key))
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
