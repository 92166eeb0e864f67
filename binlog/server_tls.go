package binlog

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/server"
)

// NewServerTLS returns a Server's TLS configuration for replicas that reach
// it at host (an IP address or a name), and its certificate as PEM, which a
// replica is given to verify the server against (MySQL's SOURCE_SSL_CA,
// MariaDB's MASTER_SSL_CA). The key is made in memory for this one server
// and never leaves it; the certificate is self-signed, names host, and is
// valid for a day around now.
//
// Replicas of MySQL 8.0 and later, and of MariaDB 11.4 and later, use TLS
// by default and refuse a source that offers none.
func NewServerTLS(host string) (*tls.Config, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("binlog server key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, fmt.Errorf("binlog server certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host, Organization: []string{"mysql-pitr restore binlog server"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		// Its own issuer: the replica is given this certificate as its CA.
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("binlog server certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
	return cfg, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// errPlaintext refuses a replica that did not take the TLS offered.
var errPlaintext = errors.New("the restore's binlog server accepts only TLS connections")

// erSecureTransportRequired is MySQL's ER_SECURE_TRANSPORT_REQUIRED.
const erSecureTransportRequired = 3159

// accounts is the one account a Server accepts, and with TLS it refuses a
// connection that is not encrypted once the replica has authenticated,
// before anything else is said.
type accounts struct {
	*server.InMemoryAuthenticationHandler
	requireTLS bool
}

func (a accounts) OnAuthSuccess(c *server.Conn) error {
	if _, ok := c.Conn.Conn.(*tls.Conn); a.requireTLS && !ok {
		return mysql.NewError(erSecureTransportRequired, errPlaintext.Error())
	}
	return nil
}
