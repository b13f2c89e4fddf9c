package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
)

// Tokens is the set of bearer tokens the API accepts. It keeps only their
// SHA-256 hashes, compares in constant time, and never accepts an empty
// token. It is safe for concurrent use.
type Tokens struct {
	hashes [][sha256.Size]byte
	ids    []string
}

// NewTokens returns the set of tokens, ignoring empty ones (and spaces
// around each). It fails when no token is left.
func NewTokens(tokens ...string) (*Tokens, error) {
	t := &Tokens{}
	for _, tok := range tokens {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		t.hashes = append(t.hashes, sha256.Sum256([]byte(tok)))
		t.ids = append(t.ids, TokenID(tok))
	}
	if len(t.hashes) == 0 {
		return nil, errors.New("no usable token: every token is empty")
	}
	return t, nil
}

// TokenID names a token in logs without revealing it: "tok-" and the first
// 8 hex digits of its SHA-256 hash, the same in every replica.
func TokenID(token string) string {
	h := sha256.Sum256([]byte(token))
	return "tok-" + hex.EncodeToString(h[:4])
}

// Check returns the ID of the token in r's "Authorization: Bearer" header,
// and whether it is one of t's. Every token is compared, in constant time,
// whichever matches.
func (t *Tokens) Check(r *http.Request) (id string, ok bool) {
	scheme, tok, found := strings.Cut(r.Header.Get("Authorization"), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", false
	}
	h := sha256.Sum256([]byte(tok))
	match := -1
	for i := range t.hashes {
		if subtle.ConstantTimeCompare(h[:], t.hashes[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return "", false
	}
	return t.ids[match], true
}

// IDs returns the IDs of the tokens (see TokenID), in order.
func (t *Tokens) IDs() []string { return slices.Clone(t.ids) }
