package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/sdk/go/auditlog"
)

const auditUsage = `usage:
  tenant-registry audit keygen NAME     make a checkpoint signing key (stdout) and print its verifier key (stderr)
  tenant-registry audit key             print the verifier key of the configured signing key
  tenant-registry audit verify --checkpoint FILE --export FILE --key VERIFIER_KEY
                                        check an NDJSON export against a signed checkpoint, offline`

// auditCommand runs the audit log's commands; none of them needs a
// running server, and verify needs no database either.
func auditCommand(cfg Config, log *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(auditUsage)
	}
	switch cmd, args := args[0], args[1:]; cmd {
	case "keygen":
		if len(args) != 1 {
			return errors.New("usage: tenant-registry audit keygen NAME (the deployment's host name, e.g. registry.example.com)")
		}
		skey, vkey, err := domain.GenerateCheckpointKey(args[0])
		if err != nil {
			return fmt.Errorf("audit keygen: %w", err)
		}
		fmt.Fprintln(stdout, skey)
		fmt.Fprintf(stderr, "signing key written to standard output: keep it secret, and give it to the server as AUDIT_SIGNING_KEY or AUDIT_SIGNING_KEY_FILE\nverifier key, to publish: %s\n", vkey)
		return nil
	case "key":
		if len(args) != 0 {
			return errors.New("usage: tenant-registry audit key")
		}
		signer, err := checkpointSigner(cfg, log)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, signer.VerifierKey())
		return nil
	case "verify":
		return auditVerify(args, stdout)
	}
	return errors.New(auditUsage)
}

// auditVerify checks an export against a checkpoint with the verifier key
// alone, as a customer does.
func auditVerify(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	checkpointFile := fs.String("checkpoint", "", "file holding the signed checkpoint (GetAuditCheckpoint's checkpoint)")
	exportFile := fs.String("export", "", "NDJSON export of the same log (/audit/export.ndjson, newest first)")
	vkey := fs.String("key", "", "the registry's verifier key (GetAuditVerifierKey, or `tenant-registry audit key`)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *checkpointFile == "" || *exportFile == "" || *vkey == "" {
		return errors.New("usage: tenant-registry audit verify --checkpoint FILE --export FILE --key VERIFIER_KEY")
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(*vkey))
	if err != nil {
		return fmt.Errorf("--key: not a verifier key: %w", err)
	}
	signed, err := os.ReadFile(*checkpointFile)
	if err != nil {
		return fmt.Errorf("--checkpoint: %w", err)
	}
	c, err := auditlog.Open(signed, verifier)
	if err != nil {
		return fmt.Errorf("--checkpoint: %w", err)
	}
	export, err := os.Open(*exportFile)
	if err != nil {
		return fmt.Errorf("--export: %w", err)
	}
	defer export.Close()
	res, err := auditlog.VerifyExport(export, c)
	if err != nil {
		return fmt.Errorf("the export does not match the checkpoint: %w", err)
	}
	fmt.Fprintf(stdout, "ok: %s holds the %d events of the checkpoint, unchanged; %d newer events match their hashes\n", c.Origin, res.Checked, res.Newer)
	return nil
}
