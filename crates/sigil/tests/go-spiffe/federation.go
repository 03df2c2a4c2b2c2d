package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// runFederationFetch fetches a trust domain's bundle with federation.FetchBundle, either
// authenticating the endpoint by SPIFFE ID (https_spiffe: -endpoint-id and -bundle, a PEM
// file of the endpoint trust domain's roots) or by web PKI (https_web: -web-roots, a PEM
// file). Prints what go-spiffe read from the document.
func runFederationFetch(args []string) error {
	flags := flag.NewFlagSet("federation-fetch", flag.ContinueOnError)
	trustDomain := flags.String("trust-domain", "", "trust domain whose bundle is fetched")
	endpointURL := flags.String("url", "", "bundle endpoint URL")
	endpointID := flags.String("endpoint-id", "", "https_spiffe: the endpoint's SPIFFE ID")
	bundlePath := flags.String("bundle", "", "https_spiffe: PEM roots of the endpoint's trust domain")
	webRoots := flags.String("web-roots", "", "https_web: PEM roots for the endpoint's certificate")
	if err := flags.Parse(args); err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(*trustDomain)
	if err != nil {
		return err
	}
	var option federation.FetchOption
	switch {
	case *endpointID != "" && *bundlePath != "" && *webRoots == "":
		id, err := spiffeid.FromString(*endpointID)
		if err != nil {
			return err
		}
		roots, err := x509bundle.Load(id.TrustDomain(), *bundlePath)
		if err != nil {
			return err
		}
		option = federation.WithSPIFFEAuth(roots, id)
	case *webRoots != "" && *endpointID == "" && *bundlePath == "":
		pool, err := loadPool(*webRoots)
		if err != nil {
			return err
		}
		option = federation.WithWebPKIRoots(pool)
	default:
		return errors.New("need -endpoint-id with -bundle (https_spiffe) or -web-roots (https_web)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bundle, err := federation.FetchBundle(ctx, td, *endpointURL, option)
	if err != nil {
		return err
	}
	report := map[string]any{
		"trust_domain":     bundle.TrustDomain().Name(),
		"x509_authorities": fingerprints(bundle.X509Authorities()),
		"jwt_authorities":  len(bundle.JWTAuthorities()),
	}
	if sequence, ok := bundle.SequenceNumber(); ok {
		report["sequence"] = sequence
	}
	if hint, ok := bundle.RefreshHint(); ok {
		report["refresh_hint_seconds"] = hint.Seconds()
	}
	emit(report)
	return nil
}

// runFederationServe serves the bundle of a trust domain it makes up itself with
// federation.NewHandler over HTTPS (a web certificate for 127.0.0.1, its CA written to
// -web-ca-out, as the https_web profile's roots). Each line "rotate" on stdin adds a new X.509
// authority and drops the oldest, bumping the sequence (refresh hint 1 s); after each change
// it prints {"sequence": N, "x509_authorities": [SHA-256...]}.
func runFederationServe(args []string) error {
	flags := flag.NewFlagSet("federation-serve", flag.ContinueOnError)
	trustDomain := flags.String("trust-domain", "", "trust domain of the served bundle")
	listen := flags.String("listen", "127.0.0.1:0", "address to listen on")
	webCAOut := flags.String("web-ca-out", "", "file to write the web CA certificate to")
	if err := flags.Parse(args); err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(*trustDomain)
	if err != nil {
		return err
	}
	served := &rotatingBundle{td: td}
	if err := served.rotate(); err != nil {
		return err
	}
	handler, err := federation.NewHandler(td, served)
	if err != nil {
		return err
	}
	webCA, serving, err := webCertificate()
	if err != nil {
		return err
	}
	if err := os.WriteFile(*webCAOut, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: webCA.Raw}), 0o644); err != nil {
		return err
	}
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: handler, TLSConfig: &tls.Config{Certificates: []tls.Certificate{serving}}}
	go func() {
		err := server.ServeTLS(listener, "", "")
		fmt.Fprintln(os.Stderr, "gospiffe: serve:", err)
		os.Exit(1)
	}()
	emit(map[string]any{"listening": (&url.URL{Scheme: "https", Host: listener.Addr().String()}).String()})
	served.report()
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		if lines.Text() != "rotate" {
			return fmt.Errorf("unknown command %q", lines.Text())
		}
		if err := served.rotate(); err != nil {
			return err
		}
		served.report()
	}
	return lines.Err()
}

// rotatingBundle is a spiffebundle.Source over a bundle that rotate() changes.
type rotatingBundle struct {
	mu       sync.Mutex
	td       spiffeid.TrustDomain
	bundle   *spiffebundle.Bundle
	sequence uint64
}

func (r *rotatingBundle) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if td != r.td {
		return nil, fmt.Errorf("no bundle for %q", td)
	}
	return r.bundle.Clone(), nil
}

// rotate adds a new CA and keeps at most two, as a CA rotation publishes the next one before
// the previous one leaves.
func (r *rotatingBundle) rotate() error {
	ca, err := signingCertificate(r.td)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var authorities []*x509.Certificate
	if r.bundle != nil {
		authorities = r.bundle.X509Authorities()
	}
	authorities = append(authorities, ca)
	if len(authorities) > 2 {
		authorities = authorities[len(authorities)-2:]
	}
	r.sequence++
	bundle := spiffebundle.New(r.td)
	bundle.SetX509Authorities(authorities)
	bundle.SetSequenceNumber(r.sequence)
	bundle.SetRefreshHint(time.Second)
	r.bundle = bundle
	return nil
}

func (r *rotatingBundle) report() {
	r.mu.Lock()
	defer r.mu.Unlock()
	emit(map[string]any{"sequence": r.sequence, "x509_authorities": fingerprints(r.bundle.X509Authorities())})
}

// signingCertificate makes a self-signed SPIFFE signing certificate for td (X.509-SVID spec
// §4: CA, keyCertSign, the trust domain's ID as its URI SAN).
func signingCertificate(td spiffeid.TrustDomain) (*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id := td.ID().URL()
	template := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{"gospiffe"}, SerialNumber: randomSerial().String()},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{id},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// webCertificate makes a web CA and a serving certificate for 127.0.0.1 signed by it.
func webCertificate() (*x509.Certificate, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "gospiffe web CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	template := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	return ca, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func randomSerial() *big.Int {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return serial
}

func loadPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return pool, nil
}

func fingerprints(certificates []*x509.Certificate) []string {
	out := []string{}
	for _, certificate := range certificates {
		sum := sha256.Sum256(certificate.Raw)
		out = append(out, hex.EncodeToString(sum[:]))
	}
	return out
}
