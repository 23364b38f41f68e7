package auditlog

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a tree head of one tenant's log, in the C2SP
// tlog-checkpoint form: the log's origin, how many events the tree holds,
// and its root hash. Signed, it is what a customer keeps to hold the
// server to its log later.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Origin names one tenant's log in checkpoints: the signing key's name,
// then /audit/ and the tenant's id ("platform" for the platform's own
// events). A checkpoint of one tenant cannot pass for another's.
func Origin(keyName, tenantID string) string {
	if tenantID == "" {
		tenantID = "platform"
	}
	return keyName + "/audit/" + tenantID
}

// Text is the checkpoint's body, as signed: origin, size and base64 root
// hash, one per line.
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
}

// ParseCheckpoint reads a checkpoint's body. Extension lines after the
// root hash are allowed and ignored, as C2SP says.
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 || !strings.HasSuffix(text, "\n") || lines[0] == "" {
		return Checkpoint{}, errors.New("a checkpoint is an origin, a tree size and a base64 root hash, one per line")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("checkpoint tree size %q is not a decimal number", lines[1])
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("checkpoint root hash %q is not a base64 SHA-256 hash", lines[2])
	}
	c := Checkpoint{Origin: lines[0], Size: size}
	copy(c.Root[:], root)
	return c, nil
}

// Sign returns c as a signed note.
func Sign(c Checkpoint, signer note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: c.Text()}, signer)
}

// Open verifies a signed checkpoint with verifier and returns it. Notes
// signed by other keys, or edited, are refused.
func Open(signed []byte, verifier note.Verifier) (Checkpoint, error) {
	n, err := note.Open(signed, note.VerifierList(verifier))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	return ParseCheckpoint(n.Text)
}

// Tree computes the root hash of a log from its leaf hashes, appended in
// order, in memory logarithmic in the log's size: the right edge of the
// tree, as perfect subtrees from the largest. Its root is tlog.TreeHash's.
type Tree struct {
	size  int64
	edges []edge // perfect subtrees, largest first
}

type edge struct {
	hash   tlog.Hash
	leaves int64
}

// Append adds the next leaf.
func (t *Tree) Append(leaf tlog.Hash) {
	t.edges = append(t.edges, edge{leaf, 1})
	for n := len(t.edges); n >= 2 && t.edges[n-2].leaves == t.edges[n-1].leaves; n = len(t.edges) {
		left, right := t.edges[n-2], t.edges[n-1]
		t.edges = append(t.edges[:n-2], edge{tlog.NodeHash(left.hash, right.hash), left.leaves * 2})
	}
	t.size++
}

// Size is how many leaves were appended.
func (t *Tree) Size() int64 { return t.size }

// Root is the root hash of the tree of every leaf appended so far.
func (t *Tree) Root() tlog.Hash {
	if len(t.edges) == 0 {
		empty, _ := tlog.TreeHash(0, nil) // the hash of the empty tree reads nothing
		return empty
	}
	h := t.edges[len(t.edges)-1].hash
	for i := len(t.edges) - 2; i >= 0; i-- {
		h = tlog.NodeHash(t.edges[i].hash, h)
	}
	return h
}

// EdgeIndexes returns the tlog stored-hash indexes of the perfect subtrees
// a tree of size leaves is made of, largest first: its right edge, which
// is all that appending to the tree, and its root, need.
func EdgeIndexes(size int64) []int64 {
	var out []int64
	for lo, level := int64(0), 63; level >= 0; level-- {
		if size&(1<<level) != 0 {
			out = append(out, tlog.StoredHashIndex(level, lo>>level))
			lo += 1 << level
		}
	}
	return out
}
