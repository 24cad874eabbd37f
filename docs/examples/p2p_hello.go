// p2p_hello connects to a p2p-transfer node (protocol version 4) with Go's crypto/tls, checks
// its node id as docs/PROTOCOL.md §2.3-§2.6 describe, and makes the Hello / Welcome exchange.
// Standard library only:
//
//	go run p2p_hello.go ADDR [EXPECTED-NODE-ID]
//
// It prints the node id the other side proved, and its Welcome. With EXPECTED-NODE-ID, a node
// with another id is refused before anything is said to it.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"time"
)

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// spkiPrefix is what every Ed25519 SubjectPublicKeyInfo starts with (§2.4).
var spkiPrefix = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}

// nodeIDText shows the 20 bytes of a node id: base32, a Luhn mod 32 check character, groups.
func nodeIDText(id []byte) string {
	chars := base32.StdEncoding.EncodeToString(id) // 20 bytes: 32 characters, no padding
	factor, sum := 2, 0
	for i := len(chars) - 1; i >= 0; i-- {
		addend := factor * strings.IndexByte(alphabet, chars[i])
		factor = 3 - factor
		sum += addend/32 + addend%32
	}
	chars += string(alphabet[(32-sum%32)%32])
	var groups []string
	for i := 0; i < 28; i += 4 {
		groups = append(groups, chars[i:i+4])
	}
	return strings.Join(append(groups, chars[28:]), "-")
}

// nodeID checks a certificate the other side presented (§2.4, items 1-4) and returns its
// node id (§2.5).
func nodeID(der []byte) ([]byte, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	key, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("the certificate's key is not an Ed25519 key")
	}
	// Self-signed by that key. (Not CheckSignatureFrom: it wants the signer to be a CA.)
	if !bytes.Equal(cert.RawIssuer, cert.RawSubject) {
		return nil, errors.New("the certificate is not self-signed")
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, err
	}
	if now := time.Now(); now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, errors.New("the certificate is not valid now")
	}
	if !bytes.Equal(cert.RawSubjectPublicKeyInfo, append(append([]byte{}, spkiPrefix...), key...)) {
		return nil, errors.New("unexpected SubjectPublicKeyInfo encoding")
	}
	digest := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return digest[:20], nil
}

// ownCertificate makes a key and a self-signed certificate for it. A real client keeps its key:
// its node id is its name to others.
func ownCertificate() (tls.Certificate, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "go example"},
		DNSNames:     []string{"p2p-transfer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, pub, priv)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go run p2p_hello.go ADDR [EXPECTED-NODE-ID]")
		os.Exit(2)
	}
	own, err := ownCertificate()
	if err != nil {
		fail(err)
	}
	var proved []byte
	config := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{own},
		NextProtos:   []string{"p2p-transfer"},
		// No certificate authority vouches for a node: the node-id check below replaces it.
		InsecureSkipVerify: true,
		// Called on every handshake, resumed ones included (VerifyPeerCertificate is not).
		VerifyConnection: func(state tls.ConnectionState) error {
			if state.NegotiatedProtocol != "p2p-transfer" {
				return errors.New("the server did not agree on ALPN p2p-transfer")
			}
			if len(state.PeerCertificates) == 0 {
				return errors.New("no certificate")
			}
			id, err := nodeID(state.PeerCertificates[0].Raw)
			if err != nil {
				return err
			}
			if len(os.Args) > 2 && !strings.EqualFold(nodeIDText(id), strings.TrimSpace(os.Args[2])) {
				return fmt.Errorf("the node is %s, not the expected %s", nodeIDText(id), os.Args[2])
			}
			proved = id
			return nil
		},
	}
	conn, err := tls.Dial("tcp", os.Args[1], config)
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	fmt.Println("node id", nodeIDText(proved))

	// Hello { version: 4 }, as §4.1 spells it out.
	hello := []byte{0x81, 0xa5, 'H', 'e', 'l', 'l', 'o', 0x81, 0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x04}
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(hello)))
	if _, err := conn.Write(append(frame, hello...)); err != nil {
		fail(err)
	}
	var header [4]byte
	if _, err := io.ReadFull(conn, header[:]); err != nil {
		fail(err)
	}
	n := binary.BigEndian.Uint32(header[:])
	if n > 2*1024*1024 {
		fail(fmt.Errorf("frame of %d bytes is over the limit", n))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(conn, body); err != nil {
		fail(err)
	}
	fmt.Printf("reply (MessagePack) %x\n", body)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}
