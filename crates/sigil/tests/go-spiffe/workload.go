package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// runContext does every one-shot call of the Workload API through go-spiffe: the three
// sources (X509Source, JWTSource, BundleSource) and the client's FetchX509Context,
// FetchJWTSVID and ValidateJWTSVID, plus jwtsvid.ParseAndValidate offline against the JWT
// bundle the BundleSource holds.
func runContext(args []string) error {
	flags := flag.NewFlagSet("context", flag.ContinueOnError)
	addr := flags.String("socket", "", "Workload API address (unix:///path)")
	audience := flags.String("audience", "db", "JWT-SVID audience")
	if err := flags.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clientOpt := workloadapi.WithClientOptions(workloadapi.WithAddr(*addr))

	client, err := workloadapi.New(ctx, workloadapi.WithAddr(*addr))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer client.Close()
	x509Context, err := client.FetchX509Context(ctx)
	if err != nil {
		return fmt.Errorf("FetchX509Context: %w", err)
	}
	var contextSVIDs []string
	for _, svid := range x509Context.SVIDs {
		contextSVIDs = append(contextSVIDs, svid.ID.String())
	}
	var contextBundles []string
	for _, bundle := range x509Context.Bundles.Bundles() {
		contextBundles = append(contextBundles, bundle.TrustDomain().Name())
	}
	sort.Strings(contextBundles)

	x509Source, err := workloadapi.NewX509Source(ctx, clientOpt)
	if err != nil {
		return fmt.Errorf("X509Source: %w", err)
	}
	defer x509Source.Close()
	svid, err := x509Source.GetX509SVID()
	if err != nil {
		return fmt.Errorf("X509Source.GetX509SVID: %w", err)
	}
	// The SVID must chain to its trust domain's bundle as go-spiffe verifies a peer.
	verifiedID, _, err := x509svid.Verify(svid.Certificates, x509Source)
	if err != nil {
		return fmt.Errorf("x509svid.Verify of our own SVID: %w", err)
	}

	jwtSource, err := workloadapi.NewJWTSource(ctx, clientOpt)
	if err != nil {
		return fmt.Errorf("JWTSource: %w", err)
	}
	defer jwtSource.Close()
	fromSource, err := jwtSource.FetchJWTSVID(ctx, jwtsvid.Params{Audience: *audience})
	if err != nil {
		return fmt.Errorf("JWTSource.FetchJWTSVID: %w", err)
	}
	fromClient, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: *audience})
	if err != nil {
		return fmt.Errorf("FetchJWTSVID: %w", err)
	}
	validated, err := client.ValidateJWTSVID(ctx, fromClient.Marshal(), *audience)
	if err != nil {
		return fmt.Errorf("ValidateJWTSVID: %w", err)
	}
	wrongAudience := "accepted"
	if _, err := client.ValidateJWTSVID(ctx, fromClient.Marshal(), "not-"+*audience); err != nil {
		wrongAudience = err.Error()
	}

	bundleSource, err := workloadapi.NewBundleSource(ctx, clientOpt)
	if err != nil {
		return fmt.Errorf("BundleSource: %w", err)
	}
	defer bundleSource.Close()
	td := svid.ID.TrustDomain()
	bundle, err := bundleSource.GetBundleForTrustDomain(td)
	if err != nil {
		return fmt.Errorf("BundleSource.GetBundleForTrustDomain: %w", err)
	}
	offline, err := jwtsvid.ParseAndValidate(fromSource.Marshal(), bundleSource, []string{*audience})
	if err != nil {
		return fmt.Errorf("jwtsvid.ParseAndValidate offline: %w", err)
	}
	offlineWrongAudience := "accepted"
	if _, err := jwtsvid.ParseAndValidate(fromSource.Marshal(), bundleSource, []string{"not-" + *audience}); err != nil {
		offlineWrongAudience = err.Error()
	}

	emit(map[string]any{
		"context_svids":            contextSVIDs,
		"context_bundles":          contextBundles,
		"x509_source_svid":         svid.ID.String(),
		"x509_source_chain":        len(svid.Certificates),
		"verified_id":              verifiedID.String(),
		"jwt_source_svid":          fromSource.ID.String(),
		"jwt_svid":                 fromClient.ID.String(),
		"jwt_audience":             fromClient.Audience,
		"validated":                validated.ID.String(),
		"wrong_audience":           wrongAudience,
		"offline":                  offline.ID.String(),
		"offline_wrong_audience":   offlineWrongAudience,
		"bundle_x509_authorities":  len(bundle.X509Authorities()),
		"bundle_jwt_authorities":   len(bundle.JWTAuthorities()),
		"bundle_trust_domain":      bundle.TrustDomain().Name(),
		"x509_source_bundle_roots": len(mustX509Bundle(x509Source, td).X509Authorities()),
	})
	return nil
}

func mustX509Bundle(source x509bundle.Source, td spiffeid.TrustDomain) *x509bundle.Bundle {
	bundle, err := source.GetX509BundleForTrustDomain(td)
	if err != nil {
		panic(err)
	}
	return bundle
}

// runWatch watches X.509 contexts with go-spiffe's client (WatchX509Context, which reconnects
// on its own) and prints every update: each SVID's ID and serial, and each bundle's trust
// domain with the SHA-256 of its authorities, so the test sees new entries, rotations and
// bundle changes. Errors the watcher reports are printed too; it runs until killed.
func runWatch(args []string) error {
	flags := flag.NewFlagSet("watch", flag.ContinueOnError)
	addr := flags.String("socket", "", "Workload API address (unix:///path)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	client, err := workloadapi.New(context.Background(), workloadapi.WithAddr(*addr))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer client.Close()
	err = client.WatchX509Context(context.Background(), printingWatcher{})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

type printingWatcher struct{}

func (printingWatcher) OnX509ContextUpdate(update *workloadapi.X509Context) {
	type svidReport struct {
		ID       string `json:"id"`
		Serial   string `json:"serial"`
		NotAfter int64  `json:"not_after"`
	}
	var svids []svidReport
	for _, svid := range update.SVIDs {
		leaf := svid.Certificates[0]
		svids = append(svids, svidReport{svid.ID.String(), leaf.SerialNumber.Text(16), leaf.NotAfter.Unix()})
	}
	bundles := map[string]string{}
	for _, bundle := range update.Bundles.Bundles() {
		var fingerprints []string
		for _, authority := range bundle.X509Authorities() {
			sum := sha256.Sum256(authority.Raw)
			fingerprints = append(fingerprints, hex.EncodeToString(sum[:]))
		}
		sort.Strings(fingerprints)
		bundles[bundle.TrustDomain().Name()] = strings.Join(fingerprints, ",")
	}
	emit(map[string]any{"svids": svids, "bundles": bundles})
}

func (printingWatcher) OnX509ContextWatchError(err error) {
	emit(map[string]any{"error": err.Error()})
}
